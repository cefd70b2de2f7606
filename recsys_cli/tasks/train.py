"""`recsys train`: data → datamodule → model → Lightning fit → best checkpoint → validation and test.

Also ``--multirun``: one run folder per job of a sweep and a summary table comparing the jobs.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recsys_cli.config import compose_config, make_run_dir, run_name, save_config, to_container
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_write_json, atomic_write_text


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"


RUN_DIR_ENV = "RECSYS_RUN_DIR"


def is_ddp_worker() -> bool:
    """True in a process that Lightning, torchrun or SLURM started as rank > 0 of a distributed run."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(cfg: DictConfig, n_items: int, max_len: int, n_users: int | None = None, items: Any = None) -> Any:
    """Instantiate ``cfg.model`` (minus its ``name`` and ``recipe``) with the sizes that come from the data.

    Models whose constructor takes ``n_users`` get the user count; those that take ``item_features``
    get the item side-feature matrix (:func:`recsys_cli.data.features.item_feature_tokens`) built
    from ``items`` (the processed item table).
    """
    import inspect

    from hydra.utils import get_class

    from recsys_cli.config import build

    params = {key: value for key, value in cfg.model.items() if key not in ("name", "recipe")}
    accepted = inspect.signature(get_class(cfg.model._target_).__init__).parameters
    data_args: dict[str, Any] = {"n_items": n_items, "max_len": max_len}
    if "n_users" in accepted:
        data_args["n_users"] = int(n_users or 0)
    if "item_features" in accepted and items is not None:
        import torch

        from recsys_cli.data.features import item_feature_tokens

        data_args["item_features"] = torch.from_numpy(item_feature_tokens(items, n_items))
    return build(params, f"model={cfg.model.name}", "check the model.* keys.", **data_args)


def build_datamodule(cfg: DictConfig, processed: Any) -> Any:
    """The training/evaluation batches of a processed dataset as ``cfg.data`` configures them."""
    from recsys_cli.data.datamodule import SequenceDataModule

    return SequenceDataModule(
        processed,
        max_len=int(cfg.data.max_len),
        batch_size=int(cfg.data.batch_size),
        eval_batch_size=int(cfg.data.eval_batch_size),
        num_workers=int(cfg.data.num_workers),
        group_by_length=bool(cfg.data.group_by_length),
        seed=int(cfg.seed),
        window_stride=cfg.data.window_stride,
    )


def build_trainer(cfg: DictConfig, callbacks: list[Any], logger: Any, run_dir: Path | None, **overrides: Any) -> Any:
    from hydra.utils import instantiate

    from recsys_cli.checkpoint import AtomicCheckpointIO
    from recsys_cli.runtime import resolve_precision

    kwargs: dict[str, Any] = {"callbacks": callbacks, "logger": logger, "plugins": [AtomicCheckpointIO()], **overrides}
    if "precision" not in overrides:
        kwargs["precision"] = resolve_precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator"))
    if run_dir is not None:
        kwargs["default_root_dir"] = str(run_dir)
    return instantiate(cfg.trainer, **kwargs)


def eval_settings(cfg: DictConfig) -> dict[str, Any]:
    """The ``eval.*`` ranking settings (checkpoints written before sampled ranking existed: full)."""
    return {
        "ranking": str(cfg.eval.get("ranking", "full")),
        "num_negatives": int(cfg.eval.get("num_negatives", 100)),
        "negatives": str(cfg.eval.get("negatives", "uniform")),
        "negative_seed": int(cfg.eval.get("negative_seed", 0)),
    }


def ranking_evaluator(cfg: DictConfig, item_popularity: Any) -> Any:
    """The evaluation protocol callback as ``cfg.eval`` configures it; ``item_popularity``: training counts."""
    from recsys_cli.evaluation.protocol import RankingEvaluator

    return RankingEvaluator(
        ks=list(cfg.eval.ks),
        mask_history=bool(cfg.eval.mask_history),
        item_popularity=item_popularity,
        log_keys=[str(cfg.train.monitor)],
        **eval_settings(cfg),
    )


def protocol_for(cfg: DictConfig, processed: Any, max_len: int) -> dict[str, Any]:
    from recsys_cli.evaluation.protocol import Protocol

    pre = processed.meta["config"]
    filters = []
    if pre.get("rating_threshold") is not None:
        filters.append(f"rating >= {pre['rating_threshold']}")
    if pre.get("min_user_interactions", 0) > 1 or pre.get("min_item_interactions", 0) > 1:
        filters.append(f"k-core users>={pre['min_user_interactions']} items>={pre['min_item_interactions']}")
    settings = eval_settings(cfg)
    sampled = settings["ranking"] == "sampled"
    protocol = Protocol(
        split=pre["split"],
        ranking=settings["ranking"],
        mask_history=bool(cfg.eval.mask_history),
        max_len=max_len,
        filters=", ".join(filters) or "no filters",
        num_negatives=settings["num_negatives"] if sampled else None,
        negatives=settings["negatives"] if sampled else None,
        negative_seed=settings["negative_seed"] if sampled else None,
    )
    return {
        **protocol.__dict__,
        "ks": list(cfg.eval.ks),
        "description": protocol.describe(),
        **({"warning": protocol.warning} if protocol.warning else {}),
        "dataset": processed.meta["name"],
        "fingerprint": processed.meta["fingerprint"],
        "users": processed.n_users,
        "items": processed.n_items,
    }


def checkpoint_metadata(
    cfg: DictConfig, processed: Any, datamodule: Any, protocol: dict[str, Any], overrides: list[str]
) -> dict[str, Any]:
    """What a checkpoint must carry so that eval and predict need nothing but the file."""
    import numpy as np
    import torch

    from recsys_cli import __version__

    user_idx = datamodule.user_idx
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user_idx, minlength=processed.n_users + 1))])
    items = processed.items
    return {
        "kind": "recommender",
        "version": __version__,
        "config": to_container(cfg),
        "overrides": list(overrides),
        "protocol": protocol,
        "data": {
            "name": processed.meta["name"],
            "fingerprint": processed.meta["fingerprint"],
            "user_ids": ["", *processed.users["user_id"].tolist()],
            "item_ids": ["", *items["item_id"].tolist()],
            "item_titles": ["", *items["title"].fillna("").tolist()],
            "item_popularity": torch.from_numpy(datamodule.train_item_counts().astype(np.float32)),
            "history_indptr": torch.from_numpy(indptr.astype(np.int64)),
            "history_items": torch.from_numpy(datamodule.item_idx.astype(np.int32)),
            "history_times": torch.from_numpy(datamodule.timestamps.astype(np.int64)),
        },
    }


def model_family(cfg: DictConfig) -> str:
    """``recommender`` or ``text``: which pipeline trains ``cfg.model`` (the class says)."""
    from hydra.utils import get_class

    try:
        return getattr(get_class(cfg.model._target_), "family", "recommender")
    except Exception:
        raise RecsysError(
            f"model={cfg.model.get('name')} names an unknown class '{cfg.model.get('_target_')}'; check model._target_."
        ) from None


def run(cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None) -> TrainResult:
    """Train one model as configured and return its run folder and metrics."""
    if model_family(cfg) == "text":
        from recsys_cli.tasks.text import train

        return train(cfg, run_dir=run_dir, overrides=overrides)
    return train_recommender(cfg, run_dir=run_dir, overrides=overrides)


def train_recommender(cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None) -> TrainResult:
    import pytorch_lightning as pl

    from recsys_cli.checkpoint import CheckpointMetadata
    from recsys_cli.evaluation.reports import write_per_user
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries
    from recsys_cli.tasks.preprocess import prepare_data

    quiet_libraries()
    keep_freed_memory()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.data.get("source") is None:
        raise RecsysError(
            f"data={cfg.data.name} has no interaction log for model={cfg.model.name}; "
            "use a text model (e.g. model=bert_intent) or an interaction dataset (e.g. data=ml100k)."
        )
    prepared = prepare_data(cfg)
    processed = prepared.processed
    max_len = int(cfg.data.max_len)
    datamodule = build_datamodule(cfg, processed)
    model = build_model(
        cfg, n_items=processed.n_items, max_len=max_len, n_users=processed.n_users, items=processed.items
    )
    run_dir = resolve_run_dir(cfg, run_dir)
    protocol = protocol_for(cfg, processed, max_len)
    evaluator = ranking_evaluator(cfg, datamodule.train_item_counts())
    metadata = CheckpointMetadata(checkpoint_metadata(cfg, processed, datamodule, protocol, overrides or []))
    user_ids = ["", *processed.users["user_id"].astype(str).tolist()]  # indexed by user_idx
    return fit_and_test(
        cfg,
        model,
        datamodule,
        [evaluator, metadata],
        evaluator.results,
        run_dir,
        overrides,
        {"protocol": protocol, "processed_data": str(processed.path)},
        reports=lambda: {"per_user": write_per_user(evaluator.per_user, user_ids, run_dir / "per_user")},
    )


def resolve_run_dir(cfg: DictConfig, run_dir: Path | None) -> Path:
    """The run folder (created, resolved config saved); DDP workers share rank 0's."""
    if is_ddp_worker() and run_dir is None:
        # A DDP worker: Lightning's launcher passes rank 0's folder in the environment; under torchrun
        # or SLURM every rank starts alone, so a fixed run.name is what names the shared folder.
        run_dir = Path(os.environ.get(RUN_DIR_ENV) or Path(cfg.paths.runs_dir) / run_name(cfg))
    elif run_dir is None:
        run_dir = make_run_dir(cfg)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by the workers Lightning launches for DDP
    return run_dir


def fit_and_test(
    cfg: DictConfig,
    model: Any,
    datamodule: Any,
    callbacks: list[Any],
    results: dict[str, dict[str, float]],
    run_dir: Path,
    overrides: list[str] | None,
    extra_metrics: dict[str, Any],
    reports: Callable[[], dict[str, Any]] | None = None,
) -> TrainResult:
    """Fit with early stopping on ``train.monitor``, then validate and test the best checkpoint.

    ``callbacks`` hold the evaluator (which logs the monitored metric and fills ``results`` with the
    ``val``/``test`` metrics) and the checkpoint metadata; ``metrics.json`` is written to ``run_dir``.
    ``reports`` (rank 0 only, after testing) writes further files and returns entries for metrics.json.
    """
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint

    from recsys_cli.runtime import release_freed_memory

    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=cfg.train.monitor,
        mode=cfg.train.mode,
        save_top_k=1,
        save_last=True,
        save_weights_only=bool(cfg.train.get("save_weights_only", True)),
        auto_insert_metric_name=False,
    )
    stopper = EarlyStopping(
        monitor=cfg.train.monitor,
        mode=cfg.train.mode,
        patience=int(cfg.train.patience),
        min_delta=float(cfg.train.min_delta),
    )
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger.get("_target_") else False
    trim = LambdaCallback(on_train_epoch_end=lambda *_: release_freed_memory())
    trainer = build_trainer(cfg, [*callbacks, checkpoints, stopper, trim], logger, run_dir)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    epochs = trainer.current_epoch
    best_path = checkpoints.best_model_path or checkpoints.last_model_path
    if not best_path:
        raise RecsysError(
            f"training produced no checkpoint (is {cfg.train.monitor} logged?); "
            "check train.monitor and trainer.limit_val_batches."
        )
    best_epoch = _checkpoint_epoch(best_path)
    trainer.validate(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
    trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
    if trainer.global_rank != 0:
        return TrainResult(run_dir=run_dir, metrics={}, overrides=list(overrides or []))
    if Path(best_path).name != "best.ckpt":
        shutil.copyfile(best_path, checkpoints.dirpath + "/best.ckpt")
    metrics = {
        "model": str(cfg.model.name),
        "data": str(cfg.data.name),
        "seed": int(cfg.seed),
        "protocol": extra_metrics.pop("protocol", None),
        "valid": results.get("val", {}),
        "test": results.get("test", {}),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "fit_seconds": round(fit_seconds, 3),
        "seconds_per_epoch": round(fit_seconds / max(1, epochs), 3),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        **extra_metrics,
        **(reports() if reports else {}),
        "overrides": list(overrides or []),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    return TrainResult(run_dir=run_dir, metrics=metrics, overrides=list(overrides or []))


def _checkpoint_epoch(path: str) -> int | None:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True).get("epoch")


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


def compose_and_run(overrides: list[str]) -> TrainResult:
    return run(compose_config(overrides), overrides=overrides)
