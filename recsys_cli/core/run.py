"""The run core: one training and one evaluation procedure for every model family.

It owns the run folder, the trainer (callbacks: early stopping, checkpoints, memory release), fit then
validate and test of the best checkpoint, ``metrics.json``, checkpoint metadata and the evaluation of a
checkpoint. What differs between families (data, model sizes, evaluator, reports, predictions) comes from
the run's :class:`~recsys_cli.core.family.ModelFamily`, chosen once from the model's class.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys_cli.config import build, compose_config, make_run_dir, run_name, save_config, to_container
from recsys_cli.core.family import ModelFamily, Prepared, family_for, family_of_checkpoint
from recsys_cli.core.progress import note
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import EXIT_INTERRUPTED, RecsysError
from recsys_cli.io import atomic_write_json

RUN_DIR_ENV = "RECSYS_RUN_DIR"
# Keys of a model's config that are run settings, not constructor arguments: its name, its `recipe:`
# (data.max_len, trainer.max_epochs, ... that the model recommends) and a checkpoint to start from.
MODEL_SETTINGS = ("name", "recipe", "init_from")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    output: Path


# --- the process ----------------------------------------------------------------------------------------
def start_task(seed: int | None = None, threads: object = "auto") -> None:
    """What every task does first: quiet third-party chatter, keep freed memory, share the cores with the
    other recsys processes (:mod:`.threads`), seed everything."""
    from recsys_cli.core.threads import cores, live_processes, share_cores
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries

    quiet_libraries()
    keep_freed_memory()
    used = share_cores(threads)
    if used < cores():
        note(f"threads: {used} of {cores()} cores ({live_processes()} recsys processes running)")
    if seed is not None:
        import pytorch_lightning as pl

        pl.seed_everything(seed, workers=True, verbose=False)


def is_ddp_worker() -> bool:
    """True in a process that Lightning, torchrun or SLURM started as rank > 0 of a distributed run."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- building -------------------------------------------------------------------------------------------
def build_model(cfg: DictConfig, spec: DataSpec) -> Any:
    """Instantiate ``cfg.model`` with the arguments its class takes from the data (``data_arguments``)."""
    from hydra.utils import get_class

    from recsys_cli.config import build

    arguments = {key: value for key, value in cfg.model.items() if key not in MODEL_SETTINGS}
    from_data = get_class(cfg.model._target_).data_arguments(spec, arguments)
    return build(arguments, f"model={cfg.model.name}", "check the model.* keys.", **from_data)


def build_trainer(cfg: DictConfig, callbacks: list[Any], logger: Any, run_dir: Path | None, **overrides: Any) -> Any:
    """``cfg.trainer`` with the run's callbacks, an atomic checkpoint writer and the resolved precision."""
    from hydra.utils import instantiate

    from recsys_cli.checkpoint import AtomicCheckpointIO
    from recsys_cli.core.epochs import progress_callbacks
    from recsys_cli.runtime import resolve_precision

    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RecsysError(
                f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU; use trainer=cpu "
                "(or trainer.accelerator=auto, which takes a GPU where there is one)."
            )
    if "enable_progress_bar" not in overrides:
        shown, bar = progress_callbacks(
            bool(cfg.trainer.get("enable_progress_bar", True)), cfg.train.monitor, cfg.train.mode
        )
        callbacks, overrides = [*callbacks, *shown], {**overrides, "enable_progress_bar": bar}
    kwargs: dict[str, Any] = {"callbacks": callbacks, "logger": logger, "plugins": [AtomicCheckpointIO()], **overrides}
    if "precision" not in overrides:
        kwargs["precision"] = resolve_precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator"))
    if run_dir is not None:
        kwargs["default_root_dir"] = str(run_dir)
    return instantiate(cfg.trainer, **kwargs)


def evaluation_trainer(cfg: DictConfig, callbacks: list[Any], **overrides: Any) -> Any:
    """A trainer that scores every validation and test batch once, in one process on one device.

    Evaluation always covers every user or text, whatever batch limits or DDP the training run used.
    ``overrides``: further Trainer arguments (e.g. a one-epoch counting fit for a baseline).
    """
    settings = {"limit_val_batches": 1.0, "limit_test_batches": 1.0, "devices": 1, "num_nodes": 1}
    return build_trainer(cfg, callbacks, logger=False, run_dir=None, strategy="auto", **{**settings, **overrides})


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


def checkpoint_metadata(
    cfg: DictConfig,
    family: ModelFamily,
    data: Prepared,
    datamodule: Any,
    protocol: dict[str, Any],
    overrides: list[str],
) -> dict[str, Any]:
    """The ``recsys`` entry of every checkpoint: what eval and predict need besides the weights."""
    from recsys_cli import __version__

    return {
        "kind": family.kind,
        "version": __version__,
        "config": to_container(cfg),
        "overrides": list(overrides),
        "protocol": protocol,
        "spec": data.spec.to_meta(),
        "data": family.checkpoint_data(cfg, data, datamodule),
    }


# --- training -------------------------------------------------------------------------------------------
def train(
    cfg: DictConfig,
    run_dir: Path | None = None,
    overrides: list[str] | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` to early stop; validate and test the best checkpoint.

    ``resume_from``: a full ``last.ckpt`` of this run (in ``run_dir``) to continue from (see :mod:`.resume`).
    """
    from recsys_cli.checkpoint import CheckpointMetadata
    from recsys_cli.evaluation.curves import write_learning_curves

    overrides = list(overrides or [])
    family = family_for(cfg)
    start_task(cfg.seed, cfg.get("threads", "auto"))
    if not family.reads(cfg.data):
        raise RecsysError(family.missing_data_message(cfg))
    clock = time.perf_counter()
    note(f"data: preparing {cfg.data.name} ...")
    data = family.prepare(cfg)
    note(
        f"data: {'reused' if data.reused else 'processed'} {data.path or cfg.data.name} "
        f"in {time.perf_counter() - clock:.1f} s"
    )
    model = build_model(cfg, data.spec)
    datamodule = family.datamodule(cfg, data, model)
    before = family.before_fit(cfg, model, datamodule)  # resuming too: caches and checks (weights come after)
    run_dir = resolve_run_dir(cfg, run_dir)  # once the data and the model are known to be usable
    protocol = family.protocol(cfg, data)
    evaluator = family.evaluator(cfg, data)
    metadata = CheckpointMetadata(checkpoint_metadata(cfg, family, data, datamodule, protocol, overrides))
    fitted = fit_and_test(cfg, model, datamodule, [evaluator, metadata], run_dir, resume_from)
    if fitted is None:  # a DDP worker (rank > 0): rank 0 reports
        return TrainResult(run_dir=run_dir, metrics={}, overrides=overrides)
    metrics = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "protocol": protocol,
        "valid": evaluator.results.get("val", {}),
        "test": evaluator.results.get("test", {}),
        **fitted,
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "processed_data": str(data.path) if data.path is not None else None,
        **before,
    }
    metrics.update(family.reports(run_dir, evaluator, data, model, metrics))
    if (curves := write_learning_curves(run_dir, cfg.train.monitor, cfg.train.mode)) is not None:
        metrics.setdefault("reports", {})["learning_curves"] = str(curves)
    metrics["overrides"] = overrides
    atomic_write_json(run_dir / "metrics.json", metrics)
    return TrainResult(run_dir=run_dir, metrics=metrics, overrides=overrides)


def fit_and_test(
    cfg: DictConfig,
    model: Any,
    datamodule: Any,
    callbacks: list[Any],
    run_dir: Path,
    resume_from: Path | None = None,
) -> dict[str, Any] | None:
    """Fit with early stopping on ``train.monitor``, then validate and test the best checkpoint.

    ``callbacks`` hold the evaluator (which logs the monitored metric) and the checkpoint metadata.
    ``best.ckpt`` holds the best weights only; with ``train.resumable`` every epoch also rewrites a full
    ``last.ckpt`` (optimiser, loops, callbacks, generators) that ``resume_from`` continues from, removed once
    the run has finished unless ``train.keep_last``. Returns the fit's epochs, timing and memory (None in DDP
    workers of rank > 0).
    """
    from pytorch_lightning.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint

    from recsys_cli.checkpoint import RngState
    from recsys_cli.core.threads import rebalance
    from recsys_cli.runtime import release_freed_memory

    train = cfg.train
    folder = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=folder,
        filename="best",
        monitor=train.monitor,
        mode=train.mode,
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    saving = [best]
    if train.resumable:
        # No monitor, top 1: the latest epoch's full state, one file rewritten (atomically) every epoch.
        latest = ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False)
        saving += [latest, RngState()]
    stopper = EarlyStopping(monitor=train.monitor, mode=train.mode, patience=train.patience, min_delta=train.min_delta)
    logger = False
    if cfg.logger.get("_target_"):
        logger = build(cfg.logger, f"logger={cfg.logger._target_}", "check the logger.* keys.", save_dir=str(run_dir))
    # Every epoch: hand freed memory back, and re-share the cores if recsys processes started or ended.
    trim = LambdaCallback(
        on_train_epoch_end=lambda *_: release_freed_memory(), on_train_epoch_start=lambda *_: rebalance()
    )
    trainer = build_trainer(cfg, [*callbacks, *saving, stopper, trim], logger, run_dir)

    resumed = _epochs_done(str(resume_from)) if resume_from else 0  # read before training rewrites it
    earlier_log = _earlier_log(logger, resumed)
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:  # Lightning's answer to Ctrl-C, after its graceful shutdown
        if not trainer.interrupted:
            raise
        raise RunInterrupted(run_dir, folder / "last.ckpt" if train.resumable else None) from None
    fit_seconds = time.perf_counter() - start
    epochs = trainer.current_epoch
    best_path = best.best_model_path
    counted = not best_path and trainer.global_step == 0
    if counted:
        # A model fitted without optimiser steps (popularity, item-kNN): Lightning saves nothing by itself.
        best_path = str(folder / "best.ckpt")
        trainer.save_checkpoint(best_path, weights_only=True)
    if not best_path or not Path(best_path).is_file():
        raise RecsysError(
            f"training produced no checkpoint (is {train.monitor} logged?); "
            "check train.monitor and trainer.limit_val_batches."
        )
    # Counted from 1, as the progress line shows them (a checkpoint saved after fit holds the next epoch).
    best_epoch = epochs if counted else _epochs_done(best_path)
    trainer.validate(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
    trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
    if trainer.global_rank != 0:
        return None
    if earlier_log is not None:
        _prepend_log(logger, earlier_log)
    if Path(best_path).name != "best.ckpt":
        shutil.copyfile(best_path, folder / "best.ckpt")
    if train.resumable and not train.keep_last:
        (folder / "last.ckpt").unlink(missing_ok=True)
    trained = epochs - resumed
    return {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "fit_seconds": round(fit_seconds, 3),
        "seconds_per_epoch": round(fit_seconds / max(1, trained), 3),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        **({"resumed_after_epoch": resumed} if resume_from else {}),
    }


class RunInterrupted(RecsysError):
    """Ctrl-C during training: the run can be resumed from its last finished epoch."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, run_dir: Path, last: Path | None, how: str | None = None) -> None:
        self.run_dir, self.resumable = run_dir, last is not None and last.is_file()
        if self.resumable:
            how = how or f"continue with `recsys train --resume {run_dir}`"
            hint = f"its last finished epoch is kept: {how}."
        else:
            hint = "no epoch had finished (or train.resumable=false), so there is nothing to resume."
        super().__init__(f"interrupted; {hint}")


def _csv_log(logger: Any) -> Path | None:
    from pytorch_lightning.loggers import CSVLogger

    return Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None


def _earlier_log(logger: Any, resumed: int) -> Any:
    """A resumed run's CSV log rows of the epochs before ``resumed`` (Lightning's CSVLogger starts it anew)."""
    path = _csv_log(logger)
    if not resumed or path is None or not path.is_file():
        return None
    import warnings

    import pandas as pd

    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    earlier = pd.read_csv(path)
    return earlier[earlier["epoch"] < resumed]


def _prepend_log(logger: Any, earlier: Any) -> None:
    """Put the epochs before the resume back in front of the resumed run's CSV log (written atomically)."""
    import pandas as pd

    from recsys_cli.io import atomic_path

    path = _csv_log(logger)
    logger.save()
    now = pd.read_csv(path) if path.is_file() else earlier.iloc[:0]
    with atomic_path(path) as tmp:
        pd.concat([earlier, now], ignore_index=True).to_csv(tmp, index=False)


def _epochs_done(path: str) -> int:
    """Epochs finished when the checkpoint at ``path`` was written (Lightning stores the 0-based index)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True).get("epoch", -1)) + 1


# --- evaluating a checkpoint ----------------------------------------------------------------------------
def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (Hydra rejects a group chosen twice)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    merged: dict[str, str] = {}
    for line in [*base, *extra]:
        merged[parser.parse_override(line).get_key_element().lstrip("+~")] = line
    return list(merged.values())


def checkpoint_config(checkpoint: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's resolved config, or its run's overrides composed again with ``overrides`` after them."""
    from recsys_cli.checkpoint import KEY

    meta = checkpoint[KEY]
    if overrides:
        return compose_config(merge_overrides(meta.get("overrides", []), overrides))
    return OmegaConf.create(meta["config"])


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder of a checkpoint file, or the folder itself when ``--checkpoint`` named a run folder."""
    if checkpoint.is_dir():
        return checkpoint
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def evaluate(
    checkpoint_path: str | Path,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    baselines: bool = False,
) -> EvalResult:
    """Validation and test metrics of a checkpoint, on its own data or (``overrides``) on other data."""
    from recsys_cli.checkpoint import build_module, load_checkpoint

    start_task()
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    family = family_of_checkpoint(checkpoint)
    cfg = checkpoint_config(checkpoint, list(overrides or []))
    model = build_module(checkpoint)
    data = family.reopen(cfg, checkpoint)
    datamodule = family.datamodule(cfg, data, model)
    evaluator = family.evaluator(cfg, data, checkpoint)
    trainer = evaluation_trainer(cfg, [evaluator])
    datamodule.setup("test")  # build the evaluation sets before the clock starts
    note(f"evaluating {checkpoint_path} on {cfg.data.name}: validation and test ...")
    start = time.perf_counter()
    trainer.validate(model, datamodule=datamodule, verbose=False)
    valid_seconds = time.perf_counter() - start
    trainer.test(model, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - start - valid_seconds
    note(f"evaluated in {valid_seconds + test_seconds:.1f} s")
    output = Path(output) if output else run_dir_of(checkpoint_path) / "eval" / "metrics.json"
    metrics = {
        "checkpoint": str(checkpoint_path),
        "seconds": {"valid": round(valid_seconds, 4), "test": round(test_seconds, 4)},
        "model": cfg.model.name,
        "data": cfg.data.name,
        "same_data_as_training": data.same_as_checkpoint,
        **data.info,
        "protocol": family.protocol(cfg, data),
        "valid": evaluator.results.get("val", {}),
        "test": evaluator.results.get("test", {}),
    }
    metrics.update(family.reports(output.parent, evaluator, data, model, metrics))
    if baselines:
        metrics["baselines"] = family.baselines(cfg, data)
    atomic_write_json(output, metrics)
    return EvalResult(metrics=metrics, output=output)
