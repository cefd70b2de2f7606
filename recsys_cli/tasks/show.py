"""`recsys show`: what a checkpoint (or a run folder) holds, read without building the model.

Everything comes from the checkpoint's ``recsys`` entry (model, kind, data, protocol, resolved config,
overrides, the recsys version that wrote it), its weights (counted, not loaded into a model) and, where the
run folder has them, ``metrics.json`` (validation and test metrics, epochs, timing) and the files beside it.
The result is plain JSON types, so ``--json`` prints exactly what the tables show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys_cli.errors import RecsysError

# The metrics a summary shows (the monitored one is always added): the ranking metrics at 10 and the text
# models' headline numbers. Every other metric stays in metrics.json.
KEY_METRICS = (
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "recall@10",
    "coverage@10",
    "accuracy",
    "macro_f1",
    "top3_accuracy",
    "oos_recall",
    "rmse",
    "mae",
)
# The settings that say what was trained, as dotted keys of the resolved config.
MAIN_KEYS = (
    "seed",
    "data.name",
    "data.path",
    "data.max_len",
    "data.split.kind",
    "train.monitor",
    "train.mode",
    "train.patience",
    "eval.ks",
    "eval.mask_history",
    "eval.ranking",
    "trainer.accelerator",
    "trainer.precision",
    "trainer.max_epochs",
)
# Settings of a model's YAML that are not architecture or optimisation (shown apart, or not at all).
MODEL_SKIPPED = ("_target_", "name", "recipe")
_ABSENT = object()


def show(path: str | Path) -> dict[str, Any]:
    """A summary of the checkpoint at ``path`` (a ``.ckpt`` file or a run folder: its ``checkpoints/best.ckpt``)."""
    import torch

    from recsys_cli import __version__
    from recsys_cli.checkpoint import KEY, load_checkpoint
    from recsys_cli.core.run import run_dir_of

    path = Path(path).expanduser()
    checkpoint = load_checkpoint(path)
    file = path / "checkpoints" / "best.ckpt" if path.is_dir() else path
    run_dir = run_dir_of(file)
    meta = checkpoint[KEY]
    config = meta.get("config", {})
    model_cfg = config.get("model", {})
    metrics = _read_metrics(run_dir / "metrics.json")
    tensors = [value for value in checkpoint.get("state_dict", {}).values() if isinstance(value, torch.Tensor)]
    protocol = meta.get("protocol") or {}
    spec = meta.get("spec") or {}
    monitor = _get(config, "train.monitor")
    in_run = (run_dir / "config.yaml").is_file() or metrics is not None
    return {
        "checkpoint": str(file),
        "run_dir": str(run_dir) if in_run else None,
        "model": {
            "name": model_cfg.get("name"),
            "class": model_cfg.get("_target_"),
            "kind": meta.get("kind"),
            "settings": {key: value for key, value in model_cfg.items() if key not in MODEL_SKIPPED},
            "stored_weights": sum(tensor.numel() for tensor in tensors),
            "stored_tensors": len(tensors),
            "stored_bytes": sum(tensor.numel() * tensor.element_size() for tensor in tensors),
            **{key: metrics[key] for key in ("total_parameters", "trainable_parameters") if key in (metrics or {})},
        },
        "data": _data(meta, protocol, spec, metrics),
        "protocol": protocol.get("description"),
        "metrics": _key_metrics(metrics, monitor) if metrics is not None else None,
        "training": _training(checkpoint, metrics),
        "config": {key: _get(config, key) for key in MAIN_KEYS if _get(config, key, _ABSENT) is not _ABSENT},
        "overrides": list(meta.get("overrides", [])),
        "files": _files(run_dir) if in_run else {file.name: file.stat().st_size},
        "written_by": {
            "recsys": meta.get("version"),
            "pytorch_lightning": checkpoint.get("pytorch-lightning_version"),
            "this_recsys": __version__,
        },
    }


def _read_metrics(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecsysError(f"{path} is not readable JSON ({exc}); rerun `recsys train` or move it away.") from None
    return metrics if isinstance(metrics, dict) else None


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _data(meta: dict[str, Any], protocol: dict[str, Any], spec: dict[str, Any], metrics: dict | None) -> dict:
    stored = meta.get("data") or {}
    data = {
        "name": stored.get("name") or _get(meta.get("config", {}), "data.name"),
        "fingerprint": stored.get("fingerprint"),
        "users": protocol.get("users") or spec.get("n_users") or None,  # text models have none
        "items": protocol.get("items") or spec.get("n_items") or None,
        "labels": len(stored["label_names"]) if stored.get("label_names") else None,
        "task": stored.get("task"),
        "processed_data": (metrics or {}).get("processed_data"),
    }
    return {key: value for key, value in data.items() if value is not None}


def _key_metrics(metrics: dict[str, Any], monitor: str | None) -> dict[str, dict[str, float]]:
    """``{split: {metric: value}}`` of the :data:`KEY_METRICS` and the monitored metric, valid then test."""
    shown = {}
    for split, prefix in (("valid", "val"), ("test", "test")):
        values = metrics.get(split) or {}
        names = [f"{prefix}/{name}" for name in KEY_METRICS]
        if monitor and monitor.split("/", 1)[-1] not in KEY_METRICS:
            names.insert(0, f"{prefix}/{monitor.split('/', 1)[-1]}")
        shown[split] = {name: values[name] for name in names if name in values}
    return shown


def _training(checkpoint: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("epochs", "best_epoch", "fit_seconds", "seconds_per_epoch", "peak_memory_mb", "resumed_after_epoch")
    training = {key: metrics[key] for key in keys if metrics and key in metrics}
    if "epoch" in checkpoint:  # the epoch the weights are from, counted from 1 (as best_epoch)
        training["checkpoint_epoch"] = int(checkpoint["epoch"]) + 1
        training["checkpoint_step"] = int(checkpoint.get("global_step", 0))
    return training


def _files(run_dir: Path) -> dict[str, int]:
    """Size in bytes of the run folder's own files and checkpoints, and of the whole folder."""
    listed = [*sorted(run_dir.glob("*")), *sorted((run_dir / "checkpoints").glob("*"))]
    sizes = {p.relative_to(run_dir).as_posix(): p.stat().st_size for p in listed if p.is_file()}
    sizes = {name: size for name, size in sizes.items() if not Path(name).name.startswith(".")}  # temp files
    sizes["(whole run folder)"] = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    return sizes
