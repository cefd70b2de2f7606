"""Model families: what differs between recommenders and text models (data, evaluator, reports, predict).

Each module implements :class:`recsys_cli.core.family.ModelFamily`; a model class names its family in its
``family`` attribute. Families import the core and the library layers (data, models, evaluation), never
a task and never each other.
"""
