"""The run core every model family shares: run folders, trainer, fit-then-test, evaluation, progress.

:mod:`recsys_cli.core.family` defines the interface a family implements; :mod:`recsys_cli.core.run`
trains and evaluates through it. The core never imports a family: a model class names its own.
"""
