"""Training progress as Lightning callbacks: a terminal bar that counts epochs from 1, or a line per epoch."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from recsys_cli.core.progress import interactive, is_quiet, note


def _epoch_label(trainer: pl.Trainer) -> str:
    total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    return f"epoch {trainer.current_epoch + 1}/{total}"


class EpochBar(TQDMProgressBar):
    """Lightning's bar, but ``Epoch 1/2`` for the first of two epochs (Lightning shows ``Epoch 0``)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(_epoch_label(trainer).capitalize())


class EpochLines(pl.Callback):
    """One line per epoch for logs: ``epoch 3/200  loss 3.7786  val/ndcg@10 0.0634  best 0.0650 (epoch 2)  4.1 s``."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for saver in trainer.checkpoint_callbacks:  # a resumed run: the best before the interruption
            if getattr(saver, "monitor", None) == self.monitor and getattr(saver, "best_model_score", None) is not None:
                self.best, self.best_epoch = float(saver.best_model_score), None
        note(f"training: {trainer.num_training_batches} batches per epoch, early stopping on {self.monitor}")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._loss_sum: Any = 0.0
        self._batches = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and pl_module.automatic_optimization:  # counting models (popularity) have no loss
            self._loss_sum = self._loss_sum + loss.detach().float()
            self._batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [_epoch_label(trainer)]
        if self._batches:
            parts.append(f"loss {float(self._loss_sum) / self._batches:.4f}")
        score = _value(metrics.get(self.monitor))
        if score is not None:
            better = self.best is None or (score > self.best if self.mode == "max" else score < self.best)
            if better:
                self.best, self.best_epoch = score, trainer.current_epoch + 1
            parts.append(f"{self.monitor} {score:.4f}")
            parts.append(f"best {self.best:.4f}" + (f" (epoch {self.best_epoch})" if self.best_epoch else ""))
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        note("  ".join(parts))


def _value(tensor: Any) -> float | None:
    if tensor is None:
        return None
    value = float(tensor)
    return None if math.isnan(value) else value


def progress_callbacks(enabled: bool, monitor: str, mode: str) -> tuple[list[Any], bool]:
    """Training's progress: the callbacks to add and whether Lightning's own bar stays on.

    On a terminal Lightning's bar, its epochs counted from 1 (``Epoch 1/2`` for two epochs); in a log file one
    line per epoch with the loss, the monitored metric and the best so far; nothing when quiet or disabled.
    """
    if not enabled or is_quiet():
        return [], False
    if interactive():
        return [EpochBar()], True
    return [EpochLines(monitor, mode)], False
