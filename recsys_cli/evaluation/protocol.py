"""Full-ranking evaluation protocol, as a Lightning callback.

Models only score: their ``validation_step``/``test_step`` return ``[B, n_items + 1]`` scores. This
callback owns everything else: the padding column and (optionally) the user's history are masked,
every item is ranked, metrics are computed per user, summed across batches and processes, and logged
as ``val/ndcg@10``, ``test/hr@20``, ... so that early stopping and checkpointing can monitor them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from recsys_cli.data import batch as keys
from recsys_cli.evaluation.metrics import hit_matrix, ranking_metrics, top_k

STAGE_PREFIX = {"validate": "val", "test": "test"}


def mask_scores(scores: torch.Tensor, batch: dict[str, torch.Tensor], mask_history: bool) -> torch.Tensor:
    """Never rank padding; with ``mask_history``, never rank items the user already interacted with."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    if mask_history:
        scores[batch[keys.SEEN_ROWS], batch[keys.SEEN_ITEMS]] = -torch.inf
    return scores


def evaluate_batch(
    scores: torch.Tensor, batch: dict[str, torch.Tensor], ks: list[int], mask_history: bool
) -> dict[str, torch.Tensor]:
    """Per-user metrics of one batch under full ranking."""
    ranked = top_k(mask_scores(scores, batch, mask_history), max(ks))
    targets = batch[keys.TARGETS]
    return ranking_metrics(hit_matrix(ranked, targets), (targets > 0).sum(1), ks)


@dataclass
class Protocol:
    """What a reported number means; written beside every metrics table and into metrics.json."""

    split: str
    ranking: str = "full"
    mask_history: bool = False
    max_len: int = 50
    filters: str = ""

    def describe(self) -> str:
        masking = "history masked" if self.mask_history else "history not masked"
        return (
            f"{self.split} split, {self.ranking} ranking over all items, {masking}, "
            f"max length {self.max_len}, {self.filters}"
        )


class RankingEvaluator(pl.Callback):
    """Computes and logs full-ranking metrics for validation and test from the scores models return."""

    def __init__(self, ks: list[int], mask_history: bool = False) -> None:
        self.ks = sorted(int(k) for k in ks)
        self.mask_history = mask_history
        self.results: dict[str, dict[str, float]] = {}
        self.per_user: dict[str, dict[str, torch.Tensor]] = {}
        self._chunks: dict[str, list[torch.Tensor]] = {}

    def _start(self) -> None:
        self._chunks = {}

    def _batch(self, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        metrics = evaluate_batch(scores, batch, self.ks, self.mask_history)
        metrics["user"] = batch[keys.USERS].to(scores.dtype)
        for name, values in metrics.items():
            self._chunks.setdefault(name, []).append(values.detach())

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        if trainer.sanity_checking or not self._chunks:
            return
        per_user = {name: torch.cat(chunks) for name, chunks in self._chunks.items()}
        names = [name for name in per_user if name != "user"]
        stacked = torch.stack([per_user[name] for name in names] + [per_user["user"]])  # [metrics + 1, users]
        if trainer.world_size > 1:
            # Each rank scored a shard; the distributed sampler pads shards to equal size with repeated
            # users. Gather every shard and count each user once, so DDP gives single-process numbers.
            gathered = trainer.strategy.all_gather(stacked.to(pl_module.device)).cpu()
            stacked = gathered.permute(1, 0, 2).reshape(stacked.shape[0], -1)
            _, first = np.unique(stacked[-1].numpy(), return_index=True)
            stacked = stacked[:, torch.from_numpy(first)]
            per_user = {name: stacked[i] for i, name in enumerate([*names, "user"])}
        means = {f"{prefix}/{name}": stacked[i].double().mean().item() for i, name in enumerate(names)}
        pl_module.log_dict(means, sync_dist=False)
        self.results[prefix] = means
        self.per_user[prefix] = {name: values.cpu() for name, values in per_user.items()}
        self._chunks = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

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
            self._batch(outputs, batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
