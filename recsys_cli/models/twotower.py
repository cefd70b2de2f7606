"""Two-tower retrieval (Covington et al. 2016, "Deep neural networks for YouTube recommendations";
Yi et al. 2019, "Sampling-bias-corrected neural modeling for large corpus item recommendations").

Item tower: the item's id embedding plus, when the data has item text, the mean embedding of its
word tokens (:mod:`recsys_cli.data.features`), through an MLP. User tower: the mean of the history's
item inputs (the same id + word embeddings), through its own MLP. Both outputs are L2-normalised and
compared by a dot product divided by ``temperature``.

Training: every position of a window with a next item is one query (its history is the window's
items so far: a running mean, so all positions cost one cumulative sum). Its positive is that next
item; the other targets of the batch are its negatives (in-batch sampled softmax), except copies of
its own positive. Popular items are over-represented among in-batch negatives, so with
``logq_correction`` every logit is corrected by ``-log Q(item)`` (Yi et al.), Q estimated from item
frequencies counted in-stream over the training targets seen so far (this batch included; per
process). Scoring uses the uncorrected dot product.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.data.spec import DataSpec
from recsys_cli.models.base import Recommender


def tower(input_size: int, hidden_size: int, output_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(input_size, hidden_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_size, output_size)
    )


def in_batch_logits(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N, N]`` logits of each query (row) against every target of the batch (column; diagonal = own).

    ``log_q [n_items + 1]``: log sampling probability of each item, subtracted from its column (the
    logQ correction). Columns holding the row's own positive elsewhere are masked (never negatives).
    """
    logits = queries @ candidates.T / temperature
    if log_q is not None:
        logits = logits - log_q[targets].unsqueeze(0)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    same.fill_diagonal_(False)
    return logits.masked_fill(same, -torch.inf)


class TwoTower(Recommender):
    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        features, vocab_size = data.item_word_features()
        return {**super().data_arguments(data, settings), "item_features": features, "feature_vocab_size": vocab_size}

    def __init__(
        self,
        n_items: int,
        max_len: int,
        item_features: torch.Tensor | None = None,
        feature_vocab_size: int | None = None,
        use_item_features: bool = True,
        embedding_size: int = 64,
        hidden_size: int = 128,
        output_size: int = 64,
        dropout: float = 0.1,
        temperature: float = 0.05,
        logq_correction: bool = True,
        **training: Any,
    ) -> None:
        """``item_features [n_items + 1, F]``: word ids per item (0 = pad) from a vocabulary of
        ``feature_vocab_size`` words (default: the largest id + 1), from the data.

        The matrix is a buffer saved with the weights; a checkpoint rebuilds the model from its stored
        :class:`~recsys_cli.data.spec.DataSpec` (a zero matrix of the same shape, refilled by the weights).
        """
        super().__init__(n_items=n_items, max_len=max_len, **training)
        if temperature <= 0:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.temperature={temperature} must be positive; e.g. model.temperature=0.05.")
        if item_features is not None and not feature_vocab_size:
            feature_vocab_size = int(item_features.max()) + 1
        if not use_item_features or item_features is None or not feature_vocab_size or feature_vocab_size < 2:
            item_features, feature_vocab_size = None, None  # no words: the id embedding alone
        self.save_hyperparameters(ignore=["item_features"])
        self.temperature = temperature
        self.logq_correction = logq_correction
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)
        self.word_embedding = None
        if item_features is not None:
            self.register_buffer("item_features", item_features.long())
            self.word_embedding = nn.Embedding(feature_vocab_size, embedding_size, padding_idx=0)
            nn.init.normal_(self.word_embedding.weight, std=0.02)
            self.word_embedding.weight.data[0].zero_()
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        self.item_embedding.weight.data[0].zero_()
        self.user_tower = tower(embedding_size, hidden_size, output_size, dropout)
        self.item_tower = tower(embedding_size, hidden_size, output_size, dropout)
        # A training statistic (for logQ), not a weight: rebuilt by training, never saved.
        self.register_buffer("target_counts", torch.zeros(n_items + 1), persistent=False)

    def item_inputs(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``[..., E]``: id embedding plus the mean embedding of the item's words (if any)."""
        inputs = self.item_embedding(item_ids)
        if self.word_embedding is not None:
            words = self.item_features[item_ids]
            counts = (words > 0).sum(-1, keepdim=True).clamp(min=1)
            inputs = inputs + self.word_embedding(words).sum(-2) / counts
        return inputs

    def item_vectors(self, item_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_tower(self.item_inputs(item_ids)), dim=-1)

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` from the mean item input of each history (padding excluded)."""
        real = (history > 0).unsqueeze(-1)
        pooled = (self.item_inputs(history) * real).sum(1) / real.sum(1).clamp(min=1)
        return F.normalize(self.user_tower(pooled), dim=-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, next_items = batch[keys.HISTORY], batch[keys.NEXT_ITEMS]
        has_target = next_items > 0
        real = (history > 0).unsqueeze(-1)
        running = (self.item_inputs(history) * real).cumsum(1) / real.cumsum(1).clamp(min=1)
        queries = F.normalize(self.user_tower(running[has_target]), dim=-1)
        targets = next_items[has_target]
        log_q = None
        if self.logq_correction:
            self.target_counts += torch.bincount(targets, minlength=self.n_items + 1)
            log_q = torch.log(self.target_counts / self.target_counts.sum()).clamp(min=-1e4)
        logits = in_batch_logits(queries, self.item_vectors(targets), targets, self.temperature, log_q)
        return F.cross_entropy(logits, torch.arange(len(targets), device=logits.device))

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        all_items = torch.arange(self.n_items + 1, device=batch[keys.HISTORY].device)
        return self.user_vectors(batch[keys.HISTORY]) @ self.item_vectors(all_items).T / self.temperature

    def score(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        users = self.user_vectors(batch[keys.HISTORY]).unsqueeze(1)
        return (self.item_vectors(item_ids) * users).sum(-1) / self.temperature
