"""Checkpoints that carry everything ``eval`` and ``predict`` need, written atomically.

Every checkpoint gets a ``recsys`` entry: its kind (``recommender``, ``text``), the resolved config, the
overrides, the evaluation protocol, the typed description of the data the model was built from
(:class:`~recsys_cli.data.spec.DataSpec`) and what its model family needs to evaluate and predict (for a
recommender the id maps, item titles, training popularity and every user's known history; for a text model
its label map), so ``recsys eval/predict --checkpoint X`` needs nothing else. Only plain types and tensors
are stored, so the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
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


class RngState(pl.Callback):
    """Saves the Python, NumPy and torch generators with every full checkpoint and restores them on resume.

    Lightning keeps the loops' progress but not the generators; without them a resumed epoch would shuffle
    and drop out differently from the one the uninterrupted run trained. Stored as plain types and tensors,
    so ``last.ckpt`` still loads with ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        import numpy as np
        import torch

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import numpy as np
        import torch

        torch.set_rng_state(state["torch"])
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached"]))
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a recsys checkpoint (of the given kind(s), if any), or explain in one line what is wrong with it."""
    path = Path(path).expanduser()
    if path.is_dir():  # a run folder: its best checkpoint
        best = path / "checkpoints" / "best.ckpt"
        if not best.is_file():
            raise RecsysError(
                f"'{path}' is a folder without checkpoints/best.ckpt; pass a run folder of `recsys train` "
                "or its checkpoints/best.ckpt."
            )
        path = best
    if not path.is_file():
        raise RecsysError(f"checkpoint '{path}' not found; pass --checkpoint runs/<run>/checkpoints/best.ckpt.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any file that is not a checkpoint (a CSV fails with IndexError inside torch)
        raise RecsysError(
            f"'{path}' is not a readable checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]}); "
            "it may be corrupt or truncated: use another .ckpt file."
        ) from None
    if not isinstance(checkpoint, dict) or KEY not in checkpoint:
        raise RecsysError(f"'{path}' is not a recsys checkpoint; pass a .ckpt written by `recsys train`.")
    found = checkpoint[KEY].get("kind")
    kinds = () if kind is None else (kind,) if isinstance(kind, str) else tuple(kind)
    if kinds and found not in kinds:
        wanted = " or ".join(kinds)
        raise RecsysError(
            f"'{path}' is a {found} checkpoint but this command needs a {wanted} checkpoint; "
            f"pass a checkpoint of a {wanted} model."
        )
    return checkpoint


def model_class(checkpoint: dict[str, Any]) -> type:
    """The class of the model a checkpoint holds (its ``family`` attribute names the family that runs it)."""
    from hydra.utils import get_class

    target = checkpoint[KEY]["config"]["model"]["_target_"]
    try:
        return get_class(target)
    except Exception:
        raise RecsysError(
            f"the checkpoint's model class '{target}' does not exist in this version of recsys; retrain the model."
        ) from None


def build_module(checkpoint: dict[str, Any]) -> pl.LightningModule:
    """Rebuild the LightningModule stored in a checkpoint, weights loaded, in eval mode.

    The constructor gets the saved hyperparameters and, from the stored :class:`DataSpec`, the arguments
    that come from the data (tensors as zero buffers of their shape, refilled by the weights).
    """
    from recsys_cli.data.spec import DataSpec

    cls = model_class(checkpoint)
    arguments = dict(checkpoint["hyper_parameters"])
    spec = checkpoint[KEY].get("spec")
    if spec is not None:
        arguments.update(cls.data_arguments(DataSpec.from_meta(spec), arguments))
    try:
        module = cls(**arguments)
    except TypeError as exc:
        raise RecsysError(
            f"the checkpoint does not fit model {cls.__name__} ({exc}); "
            "it comes from another version of recsys: retrain it."
        ) from None
    # Frozen/LoRA text models store only what training changed; their base weights came with the module.
    _, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading)
    if unexpected:
        raise RecsysError(
            f"checkpoint weights do not fit model {cls.__name__} ({unexpected[0]}, ...); "
            "the file may come from another version of recsys: retrain it."
        )
    return module.eval()


def warm_start(module: torch.nn.Module, source: str | Path, kind: str) -> dict[str, Any]:
    """Start ``module`` from the weights of an earlier checkpoint of the same kind (``model.init_from``: a
    ``.ckpt`` file or its run folder): every tensor whose name and shape match is copied, the rest keeps its
    initialisation (a text model that now tunes its encoder's top layers starts from the frozen one, say).
    Returns how many tensors were copied and kept."""
    previous = load_checkpoint(source, kind=kind)["state_dict"]
    own = module.state_dict()
    matching = {name: value for name, value in previous.items() if name in own and own[name].shape == value.shape}
    if not matching:
        raise RecsysError(
            f"model.init_from '{source}' shares no weights with this model; pass a checkpoint of the same model "
            "trained on the same data."
        )
    module.load_state_dict(matching, strict=False)
    return {"init_from": str(source), "init_copied": len(matching), "init_kept": len(own) - len(matching)}
