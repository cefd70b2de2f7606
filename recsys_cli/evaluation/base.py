"""The Lightning plumbing every evaluator shares: validation and test rounds mapped onto three hooks.

An evaluator (a ``pl.Callback``) collects each batch's model outputs with ``_batch`` and turns a finished
round into metrics with ``_end(..., prefix)`` (``val`` or ``test``), filling ``results[prefix]``; ``_start``
clears what a round collects. Sanity-check batches are never measured.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class SplitEvaluator(pl.Callback):
    def _start(self) -> None:
        raise NotImplementedError

    def _batch(self, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        raise NotImplementedError

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        raise NotImplementedError

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._batch(pl_module, outputs, batch)

    # A test round is never a sanity check: the same hook serves both.
    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
