"""BPR: matrix factorisation trained with Bayesian personalised ranking (Rendle et al. 2009, arXiv:1205.2618).

A user and an item embedding; the score is their dot product. Each observed (user, item) pair is a
positive, contrasted with ``num_negatives`` items drawn uniformly (never the positive itself) by
``-log sigmoid(score(pos) - score(neg))``. Pairs come from the standard training windows: every
target in ``next_items`` belongs to the window's user, and the user's first event (the first item of
the window that starts the user's sequence, which no window has as a target) is added, so an epoch
sees each training interaction once, like RecBole's epochs over interactions.

A user the model has not seen (index 0 at predict time, or an index beyond its table) is folded in:
its vector is the mean embedding of the items in its history.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.data.spec import DataSpec
from recsys_cli.models.base import DotProductRecommender
from recsys_cli.models.components import sample_negatives


def positive_pairs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(window row, item) pairs of a batch of training windows: every target, plus each user's first event once.

    ``batch[USERS][rows]`` are the pairs' users. A window's first real history item is its user's first
    event when the window is left-padded (it starts at the user's first event) and the position holds
    a target (with ``data.window_stride`` shorter than ``max_len`` several windows start there, but
    only the earliest has targets from that position on). A user whose first window is exactly full
    (``(n - 1) % max_len == 0`` training events) has no padding to tell it by, and its first event is
    skipped.
    """
    history, next_items = batch[keys.HISTORY], batch[keys.NEXT_ITEMS]
    has_target = next_items > 0
    rows = has_target.nonzero()[:, 0]
    first_position = (history > 0).int().argmax(1)
    starts_user = (history[:, 0] == 0) & has_target.gather(1, first_position[:, None]).squeeze(1)
    first_items = history.gather(1, first_position[:, None]).squeeze(1)[starts_user]
    return torch.cat([rows, starts_user.nonzero()[:, 0]]), torch.cat([next_items[has_target], first_items])


# A batch scores every item for each of its windows (``[windows, n_items + 1]``) when that matrix has at
# most this many entries; a larger catalogue gathers the pairs' embeddings instead (same loss and gradient).
DENSE_SCORES_MAX = 1 << 23


class BPR(DotProductRecommender):
    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**super().data_arguments(data, settings), "n_users": data.n_users}

    def __init__(
        self,
        n_items: int,
        max_len: int,
        n_users: int,
        embedding_size: int = 64,
        num_negatives: int = 1,
        reg_weight: float = 0.0,
        init_std: float = 0.1,
        **training: Any,
    ) -> None:
        """``n_users``/``n_items`` size the tables; ``training``: :class:`Recommender`'s optimiser settings."""
        super().__init__(n_items=n_items, max_len=max_len, **training)
        if num_negatives < 1:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.num_negatives={num_negatives} must be at least 1; e.g. model.num_negatives=1.")
        self.save_hyperparameters()
        self.n_users = n_users
        self.num_negatives = num_negatives
        self.reg_weight = reg_weight
        self.user_embedding = nn.Embedding(n_users + 1, embedding_size, padding_idx=0)
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=init_std)
            table.weight.data[0].zero_()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, positives = positive_pairs(batch)
        negatives = self.negatives(positives)
        user = self.user_embedding(batch[keys.USERS])  # [windows, H]: every pair of a window is its user's
        if user.shape[0] * (self.n_items + 1) <= DENSE_SCORES_MAX:
            # One matrix product scores every item per window; the pairs' scores are gathered from it. On
            # ML-100K a step is ~7x faster than gathering [pairs, num_negatives, H] embeddings, whose
            # memory traffic (forward and backward) dominates once batches hold thousands of pairs.
            scores = user @ self.item_embedding.weight.T
            # One gather for positives and negatives: its backward fills one [windows, n_items + 1] zero
            # matrix instead of two.
            picked = scores[rows.unsqueeze(1), torch.cat([positives.unsqueeze(1), negatives], dim=1)]
            positive, negative = picked[:, 0], picked[:, 1:]
        else:
            pair_user = user[rows]
            positive = (pair_user * self.item_embedding(positives)).sum(-1)
            negative = torch.einsum("nh,nkh->nk", pair_user, self.item_embedding(negatives))
        loss = -F.logsigmoid(positive.unsqueeze(1) - negative).mean()
        if self.reg_weight:
            # The paper's L2 prior, on the parameters each pair uses (per pair, like the BPR-Opt sum).
            item_squares = self.item_embedding.weight.pow(2).sum(-1)
            squares = user.pow(2).sum(-1)[rows] + item_squares[positives] + item_squares[negatives].sum(-1)
            loss = loss + self.reg_weight * squares.mean()
        return loss

    def negatives(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N, num_negatives]`` items drawn uniformly from 1..n_items, never the row's positive."""
        return sample_negatives(positives, self.n_items, self.num_negatives)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, H]``: the learned user embedding, or the mean of the history's item embeddings (fold-in)."""
        history = batch[keys.HISTORY]
        users = batch.get(keys.USERS)
        if users is None:
            return self.fold_in(history)
        unknown = (users <= 0) | (users > self.n_users)
        vectors = self.user_embedding(users.clamp(max=self.n_users) * ~unknown)
        if unknown.any():  # only these rows pay for reading their history
            vectors = vectors.index_put((unknown,), self.fold_in(history[unknown]))
        return vectors

    def fold_in(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, H]``: the mean embedding of each row's history items (a user the table does not hold)."""
        real = (history > 0).unsqueeze(-1)
        return (self.item_embedding(history) * real).sum(1) / real.sum(1).clamp(min=1)
