"""Learning curves of a run: the training loss and the monitored validation metric per epoch, as one PNG.

They are read back from the CSV logger's ``<run>/logs/metrics.csv`` (``logger=csv``, the default), where
every epoch has a ``train/loss`` row and a row of validation metrics. After fitting, the run core validates
the best checkpoint once more with no training step in between; that row repeats an earlier step and is not an
epoch of its own, so it is left out. Epochs are counted from 1, as ``metrics.json``'s ``best_epoch``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys_cli.io import atomic_path

CURVES_FILE = "learning_curves.png"
LOG_FILE = Path("logs") / "metrics.csv"
LOSS = "train/loss"


def epoch_curves(log: Path, monitor: str) -> pd.DataFrame:
    """One row per epoch (index ``epoch``, from 1) with the columns ``train/loss`` and ``monitor`` that the log
    has; an epoch without a value of one (validation every few epochs) holds NaN there."""
    frame = pd.read_csv(log)
    columns = {}
    if LOSS in frame.columns:
        trained = frame[frame[LOSS].notna()]
        columns[LOSS] = trained.groupby("epoch")[LOSS].last()
    if monitor in frame.columns:
        validated = frame[frame[monitor].notna()].drop_duplicates("step", keep="first")
        columns[monitor] = validated.groupby("epoch")[monitor].last()
    table = pd.DataFrame(columns)
    if LOSS in columns:  # the validation after fitting belongs to no trained epoch
        table = table[table[LOSS].notna()]
    table.index = table.index.astype(int) + 1
    table.index.name = "epoch"
    return table.sort_index()


def best_epoch(curves: pd.DataFrame, monitor: str, mode: str) -> int | None:
    """The first epoch with the best ``monitor`` value (``mode`` max or min), as the best checkpoint keeps it."""
    values = curves[monitor].dropna() if monitor in curves.columns else pd.Series(dtype=float)
    if values.empty:
        return None
    return int(values.idxmax() if mode == "max" else values.idxmin())


def write_learning_curves(run_dir: Path, monitor: str, mode: str | None = None) -> Path | None:
    """``<run_dir>/learning_curves.png`` (written atomically): training loss and ``monitor`` per epoch, the best
    epoch marked when ``mode`` is given. None when the run has no CSV log (``logger`` other than csv)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    log = run_dir / LOG_FILE
    if not log.is_file():
        return None
    curves = epoch_curves(log, monitor)
    if curves.empty:
        return None
    figure = Figure(figsize=(9.0, 3.4))
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    for axes, column, title in ((loss_axes, LOSS, "training loss"), (metric_axes, monitor, monitor)):
        values = curves[column].dropna() if column in curves.columns else pd.Series(dtype=float)
        axes.plot(values.index, values.to_numpy(), marker="o", markersize=3)
        axes.set_title(title if len(values) else f"{title} (not logged)")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    best = best_epoch(curves, monitor, mode) if mode else None
    if best is not None:
        value = curves.loc[best, monitor]
        metric_axes.axvline(best, color="grey", linestyle=":")
        metric_axes.plot([best], [value], marker="*", markersize=10, color="tab:orange")
        metric_axes.set_title(f"{monitor} (best: epoch {best}, {value:.4f})")
    figure.suptitle(run_dir.name, fontsize=10)
    figure.tight_layout()
    path = run_dir / CURVES_FILE
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return path
