"""Training-time loggers (``conf/logger/*.yaml``): Lightning's own, each writing inside the run folder, offline.

TensorBoard, MLflow and Weights & Biases need packages recsys does not install by default. Each builder here
checks its package first, so a missing one is one line naming the extra that brings it
(``pip install 'recsys[mlflow]'``) instead of Lightning's ``ModuleNotFoundError`` deep in a traceback. The run
core calls them with ``save_dir=<run folder>``, as it calls the CSV logger. Only building a logger imports this
module, so importing Lightning here costs ``recsys --help`` nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

from recsys_cli.errors import RecsysError


def require(module: str, extra: str) -> None:
    """Raise the one-line install hint when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise RecsysError(
            f"logger={extra} needs the {module} package, which is not installed; "
            f"pip install 'recsys[{extra}]' (or choose another logger, e.g. logger=csv)."
        )


def tensorboard(save_dir: str, **options: Any) -> TensorBoardLogger:
    """Event files in ``<save_dir>/<name>/`` for ``tensorboard --logdir``."""
    require("tensorboard", "tensorboard")
    return TensorBoardLogger(save_dir=save_dir, **options)


class MLflowRun(MLFlowLogger):
    """MLflow refuses ``@`` in metric names: ``val/ndcg@10`` is logged as ``val/ndcg_at_10`` (Lightning would
    log an ambiguous ``val/ndcg10`` and warn about every metric at every epoch)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({name.replace("@", "_at_"): value for name, value in metrics.items()}, step)


def mlflow(save_dir: str, tracking_uri: str | None = None, run_name: str | None = None, **options: Any) -> MLflowRun:
    """An MLflow run; without ``tracking_uri``, in a store inside the run folder: ``<save_dir>/mlflow.db`` and
    ``<save_dir>/mlartifacts`` (no server, offline).

    The store is one SQLite file rather than a ``mlruns/`` folder: MLflow 3 refuses its folder store unless
    the environment opts in, and SQLite (through SQLAlchemy, which Optuna already brings) is what it recommends.
    """
    require("mlflow", "mlflow")
    folder = Path(save_dir).resolve()
    if not tracking_uri:
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        options.setdefault("artifact_location", (folder / "mlartifacts").as_uri())
    return MLflowRun(tracking_uri=tracking_uri, run_name=run_name or folder.name, **options)


def wandb(save_dir: str, name: str | None = None, **options: Any) -> WandbLogger:
    """A Weights & Biases run written under ``<save_dir>/wandb/`` (offline unless ``offline=false``)."""
    require("wandb", "wandb")
    return WandbLogger(save_dir=save_dir, name=name or Path(save_dir).name, **options)
