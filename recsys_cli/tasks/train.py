"""`recsys train`: one model trained to early stop on the run core; ``--multirun``: a sweep of them.

A sweep runs every job in its own run folder and writes a summary table comparing the jobs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recsys_cli.config import compose_config, run_name
from recsys_cli.core.run import TrainResult
from recsys_cli.io import atomic_write_json, atomic_write_text


def run(cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None) -> TrainResult:
    """Train one model as configured and return its run folder and metrics."""
    from recsys_cli.core.run import train

    return train(cfg, run_dir=run_dir, overrides=overrides)


def sweep(jobs: list[list[str]]) -> tuple[Path, list[TrainResult]]:
    """Run every job of a ``--multirun`` sweep in its own folder; write summary.csv / summary.json."""
    configs = [compose_config(job) for job in jobs]  # fail on a bad job before any training starts
    root = Path(configs[0].paths.runs_dir) / "multirun" / datetime.now().strftime("%Y%m%d-%H%M%S")
    results = []
    for index, (job, cfg) in enumerate(zip(jobs, configs)):
        job_dir = root / f"{index:03d}_{run_name(cfg) if cfg.run.name else f'{cfg.model.name}_{cfg.data.name}'}"
        results.append(run(cfg, run_dir=job_dir, overrides=job))
    rows = [summary_row(result) for result in results]
    atomic_write_json(root / "summary.json", rows)
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(_csv_cell(row.get(column)) for column in header) for row in rows]
    atomic_write_text(root / "summary.csv", "\n".join(lines) + "\n")
    return root, results


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
