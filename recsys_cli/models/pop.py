"""Popularity: rank every item by how often it occurs in the training data, the same list for all.

The weakest sensible baseline; any personalised model must beat it. "Training" is one counting pass
over the training windows (every training event except each user's first), summed across processes.
"""

from __future__ import annotations

import torch

from recsys_cli.data import batch as keys
from recsys_cli.models.base import Recommender


class Pop(Recommender):
    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__(n_items=n_items, max_len=max_len)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.register_buffer("item_counts", torch.zeros(n_items + 1))

    def on_train_epoch_start(self) -> None:
        self.item_counts.zero_()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = batch[keys.NEXT_ITEMS].flatten()
        self.item_counts += torch.bincount(targets, minlength=self.n_items + 1).to(self.item_counts.dtype)
        return torch.zeros((), device=self.device)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.item_counts.copy_(self.trainer.strategy.reduce(self.item_counts, reduce_op="sum"))
        self.item_counts[0] = 0
        self.trainer.should_stop = True  # one pass counts everything; more epochs would count it again

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_counts.unsqueeze(0).expand(batch[keys.HISTORY].shape[0], -1)

    def configure_optimizers(self) -> None:
        return None
