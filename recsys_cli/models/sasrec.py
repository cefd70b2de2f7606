"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018, arXiv:1808.09781).

Causal self-attention over the last ``max_len`` items with learned positions; the output at each
position predicts the next item by a dot product with the (shared) item embeddings. All positions of
a window train at once. Loss ``ce``: full-softmax cross-entropy over every item (the stronger choice
when the catalogue fits, cf. Klenitskiy & Vasilev 2023); ``bce``: the paper's binary cross-entropy
with one uniformly sampled negative per position; ``sampled``: sampled softmax with ``num_negatives``
negatives shared across the batch (:class:`~recsys_cli.models.components.SampledSoftmax`), for
catalogues too large for a full softmax; ``gbce``: gSASRec's calibrated binary cross-entropy over
``num_negatives`` shared negatives (:func:`~recsys_cli.models.components.gbce_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.models.base import DotProductRecommender
from recsys_cli.models.components import (
    FastDropout,
    NextItemLoss,
    TransformerBlock,
    attention_mask,
    init_weights,
    trim_padding,
)


class SASRec(DotProductRecommender):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.2,
        attn_dropout: float | None = None,
        loss: str = "ce",
        num_negatives: int = 256,
        sampling: str = "uniform",
        gbce_t: float = 0.75,
        **training: Any,
    ) -> None:
        """``training``: the optimiser settings every model shares (:class:`Recommender`: lr, weight_decay, ...)."""
        super().__init__(n_items=n_items, max_len=max_len, **training)
        self.save_hyperparameters()
        self.next_item_loss = NextItemLoss(loss, n_items, num_negatives, sampling, model="SASRec", gbce_t=gbce_t)
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.dropout = FastDropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, inner_size, dropout, attn_dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size)
        self.apply(init_weights)

    def encode(
        self,
        history: torch.Tensor,
        last_only: bool = False,
        table: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden state at every position, ``[B, L, H]`` (``[B, 1, H]``: the last one, with ``last_only``).

        With ``last_only`` the final block computes only the last position (all that ranking needs).

        Positions count from the oldest item of the history (0, 1, ...; padding gets 0 and is never
        attended to), so the item a prediction is made after sits at the same position in training
        windows and at inference, and left padding or trimming it changes nothing. ``table``: the item
        table when the caller already computed it (:meth:`item_table`); ``inputs`` ``[B, L, H]``: added to each
        position's input (a subclass's conditioning).
        """
        positions = ((history > 0).cumsum(1) - 1).clamp(min=0)
        table = self.item_table() if table is None else table
        x = self.embed_items(history, table) + self.position_embedding(positions)
        x = self.dropout(x if inputs is None else x + inputs)
        mask = attention_mask(history, causal=True)
        for index, block in enumerate(self.blocks):
            x = block(x, mask, tail=int(last_only and index == len(self.blocks) - 1))
        return self.final_norm(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, next_items = trim_padding(batch[keys.HISTORY], batch[keys.NEXT_ITEMS])
        has_target = next_items > 0
        table = self.item_table()
        hidden = self.encode(history, table=table)[has_target]  # only positions with a next item cost anything
        targets = next_items[has_target]
        return self.next_item_loss(hidden, targets, table)

    @staticmethod
    def embed_items(history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Rows of ``table`` for ``history``; padding (0) gets no gradient, as ``nn.Embedding(padding_idx=0)``."""
        return F.embedding(history, table, padding_idx=0)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, H]``: the hidden state after each history's last item."""
        return self.encode(trim_padding(batch[keys.HISTORY])[0], last_only=True)[:, -1]
