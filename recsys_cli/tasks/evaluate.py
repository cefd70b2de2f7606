"""`recsys eval`: recompute validation and test metrics of a checkpoint (optionally on other data).

The run core evaluates every family's checkpoints the same way: :func:`recsys_cli.core.run.evaluate`.
"""

from __future__ import annotations

from recsys_cli.core.run import EvalResult
from recsys_cli.core.run import evaluate as run

__all__ = ["EvalResult", "run"]
