"""`recsys train`: one model trained to early stop on the run core; ``--multirun``: a sweep of them.

A sweep runs every job in its own run folder and writes a summary table comparing the jobs. ``--resume``
continues a killed run from its ``last.ckpt``, or a killed sweep: finished jobs are read back, not trained again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recsys_cli.config import compose_config, run_name
from recsys_cli.core.resume import SWEEP_FILE
from recsys_cli.core.run import TrainResult
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_write_json, atomic_write_text


def run(
    cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None, resume_from: Path | None = None
) -> TrainResult:
    """Train one model as configured and return its run folder and metrics."""
    from recsys_cli.core.run import train

    return train(cfg, run_dir=run_dir, overrides=overrides, resume_from=resume_from)


def resume(folder: str | Path, extra: list[str] | None = None) -> TrainResult:
    """Continue the killed run in ``folder`` from its last finished epoch, with the overrides it was started
    with (``extra`` overrides after them, e.g. a larger ``trainer.max_epochs``)."""
    from recsys_cli.core.resume import resume_point
    from recsys_cli.core.run import merge_overrides

    point = resume_point(folder)
    overrides = merge_overrides(point.overrides, list(extra or []))
    return run(compose_config(overrides), run_dir=point.run_dir, overrides=overrides, resume_from=point.checkpoint)


def sweep(jobs: list[list[str]], resume_root: Path | None = None) -> tuple[Path, list[TrainResult]]:
    """Run every job of a ``--multirun`` sweep in its own folder; write summary.csv / summary.json.

    ``resume_root``: a killed sweep's folder; its finished jobs are read back, a job killed mid-run resumes
    from its ``last.ckpt`` and the rest are trained.
    """
    configs = [compose_config(job) for job in jobs]  # fail on a bad job before any training starts
    root = resume_root or Path(configs[0].paths.runs_dir) / "multirun" / datetime.now().strftime("%Y%m%d-%H%M%S")
    if resume_root is None:
        atomic_write_json(root / SWEEP_FILE, {"jobs": jobs})
    results = []
    for index, (job, cfg) in enumerate(zip(jobs, configs)):
        job_dir = root / f"{index:03d}_{run_name(cfg) if cfg.run.name else f'{cfg.model.name}_{cfg.data.name}'}"
        results.append(_sweep_job(cfg, job, job_dir, resuming=resume_root is not None))
    rows = [summary_row(result) for result in results]
    atomic_write_json(root / "summary.json", rows)
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(_csv_cell(row.get(column)) for column in header) for row in rows]
    atomic_write_text(root / "summary.csv", "\n".join(lines) + "\n")
    return root, results


def resume_sweep(folder: str | Path) -> tuple[Path, list[TrainResult]]:
    """Finish the ``--multirun`` sweep in ``folder`` (it has ``sweep.json``) without training its finished jobs."""
    import json

    root = Path(folder)
    jobs = json.loads((root / SWEEP_FILE).read_text())["jobs"]
    return sweep(jobs, resume_root=root)


def is_sweep(folder: str | Path) -> bool:
    return (Path(folder) / SWEEP_FILE).is_file()


def _sweep_job(cfg: DictConfig, job: list[str], job_dir: Path, resuming: bool) -> TrainResult:
    import json
    import shutil

    from recsys_cli.core.resume import resume_point

    if resuming and (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())
        return TrainResult(run_dir=job_dir, metrics=metrics, overrides=job)
    if resuming and (job_dir / "checkpoints" / "last.ckpt").is_file():
        try:
            point = resume_point(job_dir)
        except RecsysError:
            point = None  # weights only or unreadable: trained again below
        if point is not None:
            return run(cfg, run_dir=job_dir, overrides=job, resume_from=point.checkpoint)
    if resuming and job_dir.exists():
        shutil.rmtree(job_dir)  # what a job killed before its first epoch ended left behind
    return run(cfg, run_dir=job_dir, overrides=job)


def summary_row(result: TrainResult) -> dict[str, Any]:
    metrics = result.metrics
    row: dict[str, Any] = {
        "run": result.run_dir.name,
        "overrides": " ".join(result.overrides),
        "model": metrics.get("model"),
        "data": metrics.get("data"),
        "seed": metrics.get("seed"),
    }
    row.update({key: round(value, 5) for key, value in metrics.get("valid", {}).items()})
    row.update({key: round(value, 5) for key, value in metrics.get("test", {}).items()})
    row.update({"epochs": metrics.get("epochs"), "fit_seconds": metrics.get("fit_seconds")})
    return row


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'"{text}"' if ("," in text or " " in text) else text
