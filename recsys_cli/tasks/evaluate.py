"""`recsys eval`: recompute validation and test metrics of a checkpoint (optionally on other data)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from recsys_cli.checkpoint import KEY, build_module, load_checkpoint
from recsys_cli.config import compose_config
from recsys_cli.io import atomic_write_json


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    output: Path


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (Hydra rejects a group chosen twice)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    merged: dict[str, str] = {}
    for line in [*base, *extra]:
        merged[parser.parse_override(line).get_key_element().lstrip("+~")] = line
    return list(merged.values())


def run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def run(
    checkpoint_path: str | Path,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    baselines: bool = False,
) -> EvalResult:
    """Validation and test metrics of a checkpoint (``baselines``: text models also score the untuned encoder)."""
    from recsys_cli.data.datamodule import SequenceDataModule
    from recsys_cli.data.preprocess import fingerprint
    from recsys_cli.evaluation.reports import write_per_user
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries
    from recsys_cli.tasks.preprocess import build_source, prepare_data, preprocess_config
    from recsys_cli.tasks.train import build_trainer, protocol_for, ranking_evaluator

    quiet_libraries()
    keep_freed_memory()
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, kind=("recommender", "text"))
    meta = checkpoint[KEY]
    if meta["kind"] == "text":
        from recsys_cli.tasks import text

        return text.evaluate(checkpoint_path, checkpoint, list(overrides or []), output, baselines=baselines)
    if overrides:
        cfg = compose_config(merge_overrides(meta.get("overrides", []), list(overrides)))
    else:
        cfg = OmegaConf.create(meta["config"])
    model = build_module(checkpoint)
    # Another dataset (or another version of it) is read through the checkpoint's item and user
    # vocabularies, so indices mean what the model learned: events on unknown items are dropped and
    # counted; unknown users get indices past the checkpoint's (per-user models fold them in from history).
    same_data = (
        fingerprint(build_source(cfg.data).fingerprint(), preprocess_config(cfg.data), None)
        == meta["data"]["fingerprint"]
    )
    vocab = None if same_data else meta["data"]["item_ids"][1:]
    user_vocab = None if same_data else meta["data"]["user_ids"][1:]
    processed = prepare_data(cfg, item_vocab=vocab, user_vocab=user_vocab).processed
    datamodule = SequenceDataModule(
        processed,
        max_len=model.max_len,
        eval_batch_size=int(cfg.data.eval_batch_size),
        num_workers=int(cfg.data.num_workers),
    )
    # Novelty, ARP and popularity negatives use the popularity the model was trained on (the checkpoint's).
    evaluator = ranking_evaluator(cfg, meta["data"]["item_popularity"])
    # Evaluation always covers every user, whatever batch limits the training run used, in one process
    # on one device (the training run may have used DDP): each user is scored exactly once.
    trainer = build_trainer(
        cfg,
        [evaluator],
        logger=False,
        run_dir=None,
        limit_val_batches=1.0,
        limit_test_batches=1.0,
        devices=1,
        num_nodes=1,
        strategy="auto",
    )
    datamodule.setup("test")  # build the evaluation sets before the clock starts
    start = time.perf_counter()
    trainer.validate(model, datamodule=datamodule, verbose=False)
    valid_seconds = time.perf_counter() - start
    trainer.test(model, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - start - valid_seconds
    metrics = {
        "checkpoint": str(checkpoint_path),
        "seconds": {"valid": round(valid_seconds, 4), "test": round(test_seconds, 4)},
        "model": str(cfg.model.name),
        "data": str(cfg.data.name),
        "same_data_as_training": same_data,
        "dropped": processed.meta.get("dropped", {}),
        "protocol": protocol_for(cfg, processed, model.max_len),
        "valid": evaluator.results.get("val", {}),
        "test": evaluator.results.get("test", {}),
    }
    output = Path(output) if output else run_dir_of(checkpoint_path) / "eval" / "metrics.json"
    # The evaluated data's own user ids: on the training data they are the checkpoint's user_ids.
    user_ids = np.full(int(processed.users["user_idx"].max()) + 1, "", dtype=object)
    user_ids[processed.users["user_idx"].to_numpy()] = processed.users["user_id"].astype(str).to_numpy()
    metrics["per_user"] = write_per_user(evaluator.per_user, user_ids, output.parent / "per_user")
    atomic_write_json(output, metrics)
    return EvalResult(metrics=metrics, output=output)
