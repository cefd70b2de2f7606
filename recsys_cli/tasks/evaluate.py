"""`recsys eval`: recompute validation and test metrics of a checkpoint (optionally on other data)."""

from __future__ import annotations

from pathlib import Path

from recsys_cli.core.run import EvalResult


def run(
    checkpoint_path: str | Path,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    baselines: bool = False,
) -> EvalResult:
    """Validation and test metrics of a checkpoint (``baselines``: also the references its family compares with)."""
    from recsys_cli.core.run import evaluate

    return evaluate(checkpoint_path, overrides=overrides, output=output, baselines=baselines)
