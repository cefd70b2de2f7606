"""Checkpoints that carry everything ``eval`` and ``predict`` need, written atomically.

Every checkpoint gets a ``recsys`` entry: its kind (``recommender``), the resolved config, the data
fingerprint, the id maps, item titles, training popularity and every user's known history (CSR), so
``recsys eval/predict --checkpoint X`` needs nothing else. Only plain types and tensors are stored, so
the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_path

KEY = "recsys"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but to a temp file renamed into place, with the run's ``recsys`` entry."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: dict[str, Any] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if self.metadata is not None:
            checkpoint = {**checkpoint, KEY: self.metadata}
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class CheckpointMetadata(pl.Callback):
    """Adds the ``recsys`` entry to every checkpoint Lightning saves.

    Lightning skips callbacks' ``on_save_checkpoint`` for weights-only checkpoints, so the entry also
    travels through the trainer's :class:`AtomicCheckpointIO`.
    """

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        writer = trainer.strategy.checkpoint_io
        if isinstance(writer, AtomicCheckpointIO):
            writer.metadata = self.metadata

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[KEY] = self.metadata


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...]) -> dict[str, Any]:
    """Read a recsys checkpoint of the given kind(s), or explain in one line what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise RecsysError(f"checkpoint '{path}' not found; pass --checkpoint runs/<run>/checkpoints/best.ckpt.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise RecsysError(
            f"'{path}' is not a readable checkpoint ({str(exc).splitlines()[0][:120]}); "
            "it may be corrupt or truncated: use another .ckpt file."
        ) from None
    if not isinstance(checkpoint, dict) or KEY not in checkpoint:
        raise RecsysError(f"'{path}' is not a recsys checkpoint; pass a .ckpt written by `recsys train`.")
    found = checkpoint[KEY].get("kind")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if found not in kinds:
        wanted = " or ".join(kinds)
        raise RecsysError(
            f"'{path}' is a {found} checkpoint but this command needs a {wanted} checkpoint; "
            f"pass a checkpoint of a {wanted} model."
        )
    return checkpoint


def build_module(checkpoint: dict[str, Any]) -> pl.LightningModule:
    """Rebuild the LightningModule stored in a checkpoint, weights loaded, in eval mode."""
    from hydra.utils import get_class

    target = checkpoint[KEY]["config"]["model"]["_target_"]
    module = get_class(target)(**checkpoint["hyper_parameters"])
    # Frozen/LoRA text models store only what training changed; their base weights came with the module.
    _, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading)
    if unexpected:
        raise RecsysError(
            f"checkpoint weights do not fit model {target.rsplit('.', 1)[-1]} ({unexpected[0]}, ...); "
            "the file may come from another version of recsys: retrain it."
        )
    return module.eval()
