"""Resuming a killed run: finding its folder and checking that its ``last.ckpt`` can be continued.

Every epoch a resumable run (``train.resumable``) rewrites ``checkpoints/last.ckpt`` with the weights, the
optimiser and scheduler, the early-stopping and best-checkpoint bookkeeping, the loops' progress and (through
:class:`~recsys_cli.checkpoint.RngState`) the random generators of Python, NumPy and torch, so
``recsys train --resume <run folder>`` continues as if the process had never died: the next epoch draws the
same shuffles and dropout masks. ``best.ckpt`` stays weights-only and small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_cli.errors import RecsysError

LAST = "last.ckpt"
SWEEP_FILE = "sweep.json"  # a --multirun folder's jobs, so `--resume <sweep folder>` knows them


@dataclass
class ResumePoint:
    """A killed run to continue: its folder, its ``last.ckpt`` and the overrides it was started with."""

    run_dir: Path
    checkpoint: Path
    overrides: list[str]
    epoch: int


def resume_point(folder: str | Path) -> ResumePoint:
    """The run in ``folder`` (a run folder, its checkpoints/ folder or its last.ckpt), checked resumable."""
    from recsys_cli.checkpoint import KEY, load_checkpoint

    path = Path(folder)
    if path.is_file():
        path = path.parent
    run_dir = path.parent if path.name == "checkpoints" else path
    if not run_dir.is_dir():
        raise RecsysError(f"--resume {folder}: no such run folder; pass a folder under runs/, e.g. runs/<run>.")
    last = run_dir / "checkpoints" / LAST
    if not last.is_file():
        if (run_dir / "metrics.json").is_file():
            raise RecsysError(
                f"--resume {folder}: this run finished (metrics.json is written) and kept no last.ckpt; "
                "to train it longer start a run with model.init_from=" + str(run_dir) + "."
            )
        raise RecsysError(
            f"--resume {folder}: no checkpoints/last.ckpt (the run stopped before its first epoch ended, or it "
            "was trained with train.resumable=false); train it again."
        )
    checkpoint = load_checkpoint(last)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise RecsysError(
            f"--resume {folder}: {last} holds weights only (train.resumable=false), not the optimiser and loop "
            "state a resume needs; start it again, or use model.init_from=" + str(run_dir) + "."
        )
    meta = checkpoint[KEY]
    return ResumePoint(
        run_dir=run_dir,
        checkpoint=last,
        overrides=list(meta.get("overrides", [])),
        epoch=int(checkpoint.get("epoch", 0)),
    )
