"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, "Actions Speak Louder than
Words", arXiv:2402.17152), in plain PyTorch.

Each layer replaces softmax attention and the feed-forward block by one gated, pointwise unit:

    U, V, Q, K = split(SiLU(Linear(LN(x))))
    A = SiLU(Q K^T + rab_pos + rab_time) / max_len        (causal; padding keys get 0; no softmax)
    y = x + Linear(Dropout(LN(A V) * U))

``rab_pos`` and ``rab_time`` are learned scalars per bucket (per layer, shared by the heads, as in the
authors' code): one per relative position ``i - j``, one per bucket ``floor(ln |t_i - t_j| / 0.301)`` of
the time between the query's event and the key's (TIMESTAMPS; positions where the data has none).
The authors bucket the time to the *next* event; we use the query's own event, which ranking also
knows. Dividing by the fixed ``max_len`` (the authors divide by the padded length) keeps a history's
output the same however much padding its batch carries.

Trained like SASRec: every position predicts its next item, by full softmax (``ce``), sampled
softmax (``sampled``) or gSASRec's gBCE (``gbce``) over the shared item embeddings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.models.base import DotProductRecommender
from recsys_cli.models.components import (
    FastDropout,
    NextItemLoss,
    attention_mask,
    init_weights,
    lookup,
    trim_padding,
)
from recsys_cli.models.item_repr import TEXT_DATA, TextItems

LOSSES = ("ce", "sampled", "gbce")


def time_buckets(times: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``[B, L, L]`` bucket of ``|t_i - t_j|`` for query ``i`` and key ``j``: log-spaced, as in the authors' code."""
    gap = (times.unsqueeze(2) - times.unsqueeze(1)).abs().clamp(min=1).float()
    return (torch.log(gap) / 0.301).long().clamp(max=num_buckets - 1)


class HSTULayer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float, max_len: int, num_time_buckets: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.max_len = max_len
        self.norm = nn.LayerNorm(hidden_size)
        self.uvqk = nn.Linear(hidden_size, 4 * hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = FastDropout(dropout)
        self.position_bias = nn.Parameter(torch.zeros(max_len))
        self.time_bias = nn.Parameter(torch.zeros(num_time_buckets)) if num_time_buckets else None

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        distance: torch.Tensor,
        buckets: torch.Tensor | None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``x [B, L, H]``, ``mask [B, 1, L, L]``, ``distance [L, L]`` (i - j), ``buckets [B, L, L]`` → ``[B, L, H]``.

        With ``last_only`` only the last position is computed (``[B, 1, H]``); keys still see all.
        """
        batch, length, hidden = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm(x))).chunk(4, dim=-1)
        v, q, k = (t.view(batch, length, self.num_heads, -1).transpose(1, 2) for t in (v, q, k))
        bias = lookup(self.position_bias, distance.clamp(0, self.max_len - 1)).unsqueeze(0)
        if self.time_bias is not None and buckets is not None:
            bias = bias + lookup(self.time_bias, buckets)
        if last_only:
            q, mask, bias, u, x = q[:, :, -1:], mask[:, :, -1:], bias[:, -1:], u[:, -1:], x[:, -1:]
        weights = F.silu(q @ k.transpose(-1, -2) + bias.unsqueeze(1)) / self.max_len
        attended = (weights.masked_fill(~mask, 0.0) @ v).transpose(1, 2).reshape(batch, q.shape[2], hidden)
        return x + self.out(self.dropout(self.attention_norm(attended) * u))


class HSTU(TextItems, DotProductRecommender):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        num_time_buckets: int = 128,
        loss: str = "ce",
        num_negatives: int = 256,
        sampling: str = "uniform",
        gbce_t: float = 0.75,
        **options: Any,
    ) -> None:
        """``options``: the optimiser settings every model shares (:class:`Recommender`: lr, weight_decay, ...)
        and the item representation's (:class:`~recsys_cli.models.item_repr.TextItems`: fusion, text_encoder, ...)."""
        text, training = self.split_text_settings(options)
        super().__init__(n_items=n_items, max_len=max_len, **training)
        self.save_hyperparameters(ignore=list(TEXT_DATA))
        self.num_time_buckets = num_time_buckets
        self.next_item_loss = NextItemLoss(
            loss, n_items, num_negatives, sampling, model="HSTU", allowed=LOSSES, gbce_t=gbce_t
        )
        self.build_items(n_items, hidden_size, text)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.embedding_scale = math.sqrt(hidden_size)  # the authors' input scaling
        self.dropout = FastDropout(dropout)
        self.layers = nn.ModuleList(
            HSTULayer(hidden_size, num_heads, dropout, max_len, num_time_buckets) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size)
        self.apply(init_weights)

    def encode(
        self,
        history: torch.Tensor,
        times: torch.Tensor | None,
        last_only: bool = False,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden state at every position ``[B, L, H]`` (``[B, 1, H]``: the last one, with ``last_only``).

        ``times [B, L]`` are the event times aligned with ``history``; without them, positions stand in.
        """
        real = history > 0
        positions = (real.cumsum(1) - 1).clamp(min=0)
        if times is None:
            times = positions + 1
        items = F.embedding(history, self.item_table() if table is None else table, padding_idx=0)
        x = self.dropout(items * self.embedding_scale + self.position_embedding(positions))
        mask = attention_mask(history, causal=True)
        index = torch.arange(history.shape[1], device=history.device)
        distance = index.unsqueeze(1) - index.unsqueeze(0)
        buckets = time_buckets(times, self.num_time_buckets) if self.num_time_buckets else None
        for number, layer in enumerate(self.layers):
            x = layer(x, mask, distance, buckets, last_only=last_only and number == len(self.layers) - 1)
        return self.final_norm(x)

    def _inputs(self, batch: dict[str, torch.Tensor], *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """History, times (or None) and ``aligned`` tensors, trimmed of the padding the batch shares."""
        times = batch.get(keys.TIMESTAMPS)
        if times is None:
            history, *rest = trim_padding(batch[keys.HISTORY], *aligned)
            return history, None, *rest
        return trim_padding(batch[keys.HISTORY], times, *aligned)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, times, next_items = self._inputs(batch, batch[keys.NEXT_ITEMS])
        has_target = next_items > 0
        table = self.item_table()  # once per step: with text it is computed, not looked up
        hidden = self.encode(history, times, table=table)[has_target]
        targets = next_items[has_target]
        return self.next_item_loss(hidden, targets, table)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, times = self._inputs(batch)
        return self.encode(history, times, last_only=True)[:, -1]
