"""Models fitted in closed form on the binary user-item matrix ``X``, in one pass over the training data.

"Training" is one epoch that collects the distinct (user, item) pairs of the training windows (history and
targets alike, summed across processes); then, without gradients, the subclass's :meth:`fit_interactions`
builds its item-item weights from them (ItemKNN's cosine neighbours, EASE's ridge regression).
"""

from __future__ import annotations

import torch

from recsys_cli.data import batch as keys
from recsys_cli.models.base import Recommender


class FitOnInteractions(Recommender):
    """Collects ``X``'s pairs over one training epoch and fits once; no optimiser, no second epoch."""

    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__(n_items=n_items, max_len=max_len)
        self.automatic_optimization = False
        self._pairs: list[torch.Tensor] = []

    def on_train_epoch_start(self) -> None:
        self._pairs = []

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Every item of a window belongs to the window's user: history and targets alike (the indicator
        # matrix is binary, so items repeated across overlapping windows count once).
        window = torch.cat([batch[keys.HISTORY], batch[keys.NEXT_ITEMS]], dim=1)
        rows, columns = (window > 0).nonzero(as_tuple=True)
        self._pairs.append((batch[keys.USERS][rows] * (self.n_items + 1) + window[rows, columns]).unique())
        return torch.zeros((), device=self.device)

    def on_validation_epoch_start(self) -> None:
        # Lightning validates before on_train_epoch_end, so the model is fitted here, once.
        if self._pairs:
            self._fit()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self._pairs:
            self._fit()
        self.trainer.should_stop = True  # one pass sees every pair; more epochs would find the same ones

    def _fit(self) -> None:
        """Gather the pairs of every process and fit on them."""
        pairs = torch.cat(self._pairs).unique()
        self._pairs = []
        if self._trainer is not None and self.trainer.world_size > 1:
            sizes = self.all_gather(torch.tensor(len(pairs), device=self.device)).flatten()
            padded = torch.full((int(sizes.max()),), -1, dtype=pairs.dtype, device=self.device)
            padded[: len(pairs)] = pairs
            pairs = self.all_gather(padded).flatten()
            pairs = pairs[pairs >= 0].unique()
        pairs = pairs.cpu()
        self.fit_interactions(pairs // (self.n_items + 1), pairs % (self.n_items + 1))

    def fit_interactions(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Fit on the distinct (user, item) pairs of ``X`` (item 0 is padding and never occurs)."""
        raise NotImplementedError

    def configure_optimizers(self) -> None:
        return None


def recent_history(history: torch.Tensor, history_len: int | None) -> torch.Tensor:
    """The last ``history_len`` items of left-padded histories (all of them when None)."""
    return history if history_len is None else history[:, -history_len:]
