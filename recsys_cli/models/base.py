"""The one recommender interface every model implements, turned into Lightning steps here.

A model defines ``loss(batch)`` (training) and ``score_all(batch) -> [B, n_items + 1]`` (column 0 is
padding); ``score(batch, item_ids)`` has a default built on ``score_all``. Validation and test steps
only return scores: the evaluation protocol (:mod:`recsys_cli.evaluation.protocol`) ranks and measures,
so no model has its own evaluation loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch

from recsys_cli.data import batch as keys
from recsys_cli.data.spec import DataSpec


def decay_groups(parameters: Any, weight_decay: float, **options: Any) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable ``parameters``: matrices decay, biases and norms do not."""
    parameters = [p for p in parameters if p.requires_grad]
    return [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": weight_decay, **options},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0, **options},
    ]


LR_SCHEDULES = ("constant", "cosine", "linear")


def check_schedule(lr_schedule: str, warmup_epochs: float, lr_decay: float | None) -> None:
    """A user error for a schedule that does not exist or cannot be combined with plateau decay."""
    from recsys_cli.errors import RecsysError

    if lr_schedule not in LR_SCHEDULES:
        raise RecsysError(f"unknown model.lr_schedule '{lr_schedule}'; use one of: {', '.join(LR_SCHEDULES)}.")
    if warmup_epochs < 0:
        raise RecsysError(f"model.warmup_epochs={warmup_epochs} must be 0 or more; e.g. model.warmup_epochs=1.")
    if lr_decay and (lr_schedule != "constant" or warmup_epochs > 0):
        raise RecsysError(
            "model.lr_decay (decay on a plateau) cannot be combined with model.lr_schedule or model.warmup_epochs; "
            "set model.lr_decay=null, or model.lr_schedule=constant model.warmup_epochs=0."
        )


class StepSchedule:
    """The learning-rate factor at optimiser step ``step``: a linear warm-up over ``warmup`` steps from
    ``1 / warmup``, then constant, or a cosine / linear decay to zero at step ``total`` (the run's planned
    steps, ``trainer.max_epochs`` epochs; :meth:`fit_in_time` brings it forward to a wall-clock limit). A plain
    object so its settings travel in checkpoints (LambdaLR saves a callable object's attributes)."""

    def __init__(self, kind: str, warmup: int, total: int) -> None:
        self.kind = kind
        self.warmup = warmup
        self.total = max(total, warmup + 1)
        self.planned = self.total

    def fit_in_time(self, step: int, steps_per_epoch: int, seconds_per_epoch: float, seconds_left: float) -> None:
        """End the decay with the last whole epoch that fits in ``seconds_left`` (``trainer.max_time``), or at
        the planned step if that comes first; re-estimated every epoch, so the decay follows the run's speed."""
        epochs_left = max(0, math.floor(seconds_left / max(seconds_per_epoch, 1e-9)))
        self.total = max(step + 1, self.warmup + 1, min(self.planned, step + epochs_left * steps_per_epoch))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))


# ``model.dropout=auto``: the SASRec paper's rule (Kang & McAuley 2018: 0.2 on MovieLens-1M, 0.5 on the sparse
# Amazon and Steam data), with sparse meaning a training density (events / (users x items)) below 1%. Measured
# on validation NDCG@10 over two or three seeds: Office (0.37% dense) SASRec 0.0548 -> 0.0569 and HSTU
# 0.0561 -> 0.0569 with 0.5; ML-100K (6.2%) and the synthetic shop (3.6%) keep 0.2 (0.35 lost 0.5% on both).
SPARSE_DENSITY = 0.01
DENSE_DROPOUT, SPARSE_DROPOUT = 0.2, 0.5


def density(data: DataSpec) -> float | None:
    """Training events per (user, item) pair, or None where the spec does not say (no item counts)."""
    if data.item_counts is None or not data.n_users or not data.n_items:
        return None
    return float(data.item_counts.sum()) / (data.n_users * data.n_items)


def auto_dropout(data: DataSpec) -> float:
    """``model.dropout=auto``: 0.5 on sparse training data (density below 1%), else 0.2."""
    dense = density(data)
    return SPARSE_DROPOUT if dense is not None and dense < SPARSE_DENSITY else DENSE_DROPOUT


class Recommender(pl.LightningModule):
    """Base class: ``n_items`` and ``max_len`` come from the data; the rest from ``conf/model``."""

    # The model family that trains, evaluates and applies this model (recsys_cli.families).
    family = "recsys_cli.families.recommender.RecommenderFamily"

    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """The constructor arguments that come from the data; a model that needs more extends this.

        ``settings``: the model's own settings (``conf/model``, or a checkpoint's hyperparameters), for a
        model whose data arguments depend on them (which encoder embeds the item text, say).
        ``dropout: auto`` becomes a number here, from the data's density (:func:`auto_dropout`), so the
        checkpoint's hyperparameters hold the value the model trained with.
        """
        arguments: dict[str, Any] = {"n_items": data.n_items, "max_len": data.max_len}
        dropout = None if settings is None else settings.get("dropout")
        if dropout == "auto":
            arguments["dropout"] = auto_dropout(data)
        elif isinstance(dropout, str):
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.dropout={dropout} is not a number; give one in [0, 1) (e.g. 0.2) or auto.")
        return arguments

    def __init__(
        self,
        n_items: int,
        max_len: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_decay: float | None = None,
        lr_decay_patience: int = 2,
        monitor: str = "val/ndcg@10",
        monitor_mode: str = "max",
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
    ) -> None:
        super().__init__()
        check_schedule(lr_schedule, warmup_epochs, lr_decay)
        self.n_items = n_items
        self.max_len = max_len
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_decay = lr_decay
        self.lr_decay_patience = lr_decay_patience
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self._epoch_loss: torch.Tensor | None = None  # [loss sum, windows] of the epoch so far

    # --- the interface -------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        """Scores of given candidates ``item_ids [B, C]`` (sampled-ranking protocols use this)."""
        return self.score_all(batch).gather(1, item_ids)

    # --- Lightning plumbing shared by all models -------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        # The epoch's mean loss is summed here and logged once per epoch: a Lightning log call per step
        # costs about as much as a whole BPR step on ML-100K.
        windows = batch[keys.HISTORY].shape[0]
        step = torch.stack([loss.detach().float() * windows, loss.new_tensor(float(windows))])
        self._epoch_loss = step if self._epoch_loss is None else self._epoch_loss + step
        return loss

    def on_train_start(self) -> None:
        self._fit_start = time.perf_counter()
        self._epochs_this_fit = 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_loss is not None:
            total, windows = self._epoch_loss
            self.log("train/loss", total / windows, prog_bar=True)
            self._epoch_loss = None
        # For time-to-quality curves: the learning rate the epoch ended with, and the wall seconds since
        # fitting (re)started, this epoch's validation included (Lightning validates before this hook).
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        if optimizers and optimizers[0].param_groups:  # models fitted by counting have a mock optimiser
            self.log("train/lr", float(optimizers[0].param_groups[0]["lr"]))
        elapsed = time.perf_counter() - getattr(self, "_fit_start", time.perf_counter())
        self.log("time/elapsed_s", elapsed)
        self._fit_schedule_in_time(elapsed)

    def _fit_schedule_in_time(self, elapsed: float) -> None:
        """Under ``trainer.max_time``, a decaying schedule ends when the time does (see StepSchedule.fit_in_time)."""
        from pytorch_lightning.callbacks import Timer

        if self._trainer is None or self.lr_schedule == "constant" or not self.trainer.lr_scheduler_configs:
            return
        schedule = getattr(self.trainer.lr_scheduler_configs[0].scheduler, "lr_lambdas", [None])[0]
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining() if timer is not None else None
        if not isinstance(schedule, StepSchedule) or left is None:
            return
        self._epochs_this_fit += 1
        per_epoch = elapsed / self._epochs_this_fit
        schedule.fit_in_time(self.trainer.global_step, self.trainer.num_training_batches, per_epoch, left)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.score_all(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.score_all(batch)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups: every trainable parameter, matrices with ``weight_decay``; a model whose
        parts learn at another rate (a tuned text encoder) splits them off with :func:`decay_groups`."""
        return decay_groups(self.parameters(), self.weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        """AdamW, decoupled weight decay on matrices only (not biases and norms).

        With ``lr_decay`` the learning rate is multiplied by it whenever ``monitor`` has not improved for
        ``lr_decay_patience`` validation rounds (ReduceLROnPlateau), which settles a noisy plateau.
        """
        groups = self.optimizer_groups()
        # One fused kernel over all parameters: on CPU the default per-tensor path costs ~20x more per
        # step for embedding-heavy models (BPR's two tables: 39 ms vs 1.9 ms, measured).
        optimizer = torch.optim.AdamW(groups, lr=self.lr, fused=True)
        if self.lr_schedule != "constant" or self.warmup_epochs > 0:
            total = int(self.trainer.estimated_stepping_batches)
            warmup = round(self.warmup_epochs * total / max(1, self.trainer.max_epochs or 1))
            schedule = StepSchedule(self.lr_schedule, warmup, total)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if not self.lr_decay:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=self.monitor_mode, factor=self.lr_decay, patience=self.lr_decay_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}


class DotProductRecommender(Recommender):
    """A recommender that scores an item by the dot product of one query vector per row with its embedding.

    Subclasses own ``item_embedding`` (``nn.Embedding(n_items + 1, H)``), or override ``item_table()`` (an
    :class:`~recsys_cli.models.item_repr.ItemRepresentation` of IDs and text), and define
    ``query_vectors(batch) -> [B, H]`` (a sequence model's last hidden state, a user embedding, ...); full
    ranking and candidate scoring both come from here, so they always agree.
    """

    def item_table(self) -> torch.Tensor:
        """Every item's vector ``[n_items + 1, H]`` (row 0: padding)."""
        return self.item_embedding.weight

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_vectors(batch) @ self.item_table().T

    def score(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        return (self.item_table()[item_ids] * self.query_vectors(batch).unsqueeze(1)).sum(-1)
