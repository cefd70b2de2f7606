"""GRU4Rec: a recurrent network over the item sequence (Hidasi et al., ICLR 2016, arXiv:1511.06939).

A GRU reads the item embeddings of a history; its state after each item, projected back to the
embedding space, scores the next item by a dot product with the (shared) item embeddings. The loss
is full-softmax cross-entropy over every item, the variant of Hidasi & Karatzoglou 2018
(arXiv:1706.03847) and RecBole, with every position of a training window trained at once.

Histories arrive left-padded; a GRU that ran over the padding first would start from a state the
padding moved. They are right-aligned instead (real items first, padding after), so the recurrent
state at each real item is exactly that of the unpadded sequence and padding never reaches it.

Items may be read through their text as well (``model.fusion``, :class:`~recsys_cli.models.item_repr.TextItems`):
the same item table feeds the GRU and scores the next item.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.models.base import DotProductRecommender
from recsys_cli.models.components import FastDropout, full_softmax_loss, init_weights, trim_padding
from recsys_cli.models.item_repr import TEXT_DATA, TextItems


def right_align(history: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move the items of a left-padded ``history [B, L]`` to the front of each row (padding last).

    ``aligned`` tensors are moved alike. Row ``b`` is rotated left by its number of padding columns,
    which carries the (all-padding) leading columns to the end.
    """
    length = history.shape[1]
    shift = length - (history > 0).sum(1, keepdim=True)
    columns = (torch.arange(length, device=history.device).unsqueeze(0) + shift) % length
    return tuple(t.gather(1, columns) for t in (history, *aligned))


class GRU4Rec(TextItems, DotProductRecommender):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.2,
        **options: Any,
    ) -> None:
        """``options``: the optimiser settings every model shares (:class:`Recommender`: lr, weight_decay, ...)
        and the item representation's (:class:`~recsys_cli.models.item_repr.TextItems`: fusion, text_encoder, ...)."""
        text, training = self.split_text_settings(options)
        super().__init__(n_items=n_items, max_len=max_len, **training)
        self.save_hyperparameters(ignore=list(TEXT_DATA))
        self.build_items(n_items, embedding_size, text)
        self.dropout = FastDropout(dropout)
        self.gru = nn.GRU(
            embedding_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.project = nn.Linear(hidden_size, embedding_size)
        self.apply(init_weights)
        for name, weight in self.gru.named_parameters():  # GRU weights: RecBole's xavier init
            (nn.init.xavier_uniform_ if "weight" in name else nn.init.zeros_)(weight)

    def encode(self, history: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Output ``[B, L, E]`` at every position of a right-aligned history (garbage after its end);
        ``table``: the item table when the caller computed it already."""
        table = self.item_table() if table is None else table
        states, _ = self.gru(self.dropout(F.embedding(history, table, padding_idx=0)))
        return self.project(self.dropout(states))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, next_items = right_align(*trim_padding(batch[keys.HISTORY], batch[keys.NEXT_ITEMS]))
        has_target = next_items > 0
        table = self.item_table()  # once per step: with text it is computed, not looked up
        return full_softmax_loss(self.encode(history, table)[has_target], next_items[has_target], table)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, E]``: the output after each history's last item."""
        (history,) = right_align(*trim_padding(batch[keys.HISTORY]))
        last = ((history > 0).sum(1) - 1).clamp(min=0)
        return self.encode(history)[torch.arange(len(history), device=history.device), last]
