"""BERT4Rec: a bidirectional transformer trained by masked-item prediction (Sun et al., CIKM 2019, arXiv:1904.06690).

Training hides a random ``mask_prob`` share of a window's items behind a [MASK] token (id
``n_items + 1``) and predicts each hidden item from both sides with full-softmax cross-entropy over
all items. The sequence is the whole training window (the history plus its last next item), so every
item of the user can be masked. Ranking appends [MASK] after the history and reads the output there:
the model fills in "the item after the last one". [MASK] is an input token only: ``score_all`` returns
the ``n_items + 1`` columns of padding and real items, never [MASK].

With ``next_item_ratio`` a share of the windows train the ranking task itself instead (RecBole's
``ft_ratio``): the window is cut after a random position, and only the item there is masked, so it is
predicted from the items before it alone, as at ranking. A cut at every position is RecBole's prefix
augmentation in expectation, without its one training sample per prefix.

With ``next_item_weight`` every prefix of a window trains the ranking task at once, in one extra pass
(the two-stream attention of XLNet, Yang et al. 2019): beside the window's items (the content stream)
stands a query stream of [MASK] tokens, one per position, each seeing only the items before it and
itself. The query at position ``j`` is the [MASK] that ranking appends after the first ``j`` items, and
it predicts item ``j``; the loss is added to the masked-item loss with this weight. The targets are the
window's next-item targets (with ``data.window_stride`` shorter than ``max_len``, its last ``stride``
items, each seen after at least ``max_len - stride`` items), so an epoch predicts each training event
once. With one layer each query is exactly a RecBole next-item sample of its prefix, for about 1.5 times
the cost of one masked-item pass. With more layers the content stream under the queries attends
causally (an item sees the items before it), since a bidirectional one would show a query the item it
predicts.

Positions are learned and count from the oldest item (as in :mod:`recsys_cli.models.sasrec`), so a
window in training and a history + [MASK] at ranking place their items alike, and left padding or
trimming it changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.models.base import Recommender
from recsys_cli.models.components import (
    FastDropout,
    TransformerBlock,
    attention_mask,
    init_weights,
    trim_padding,
)


class BERT4Rec(Recommender):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.1,
        mask_prob: float = 0.4,
        next_item_ratio: float = 0.0,
        next_item_weight: float = 0.0,
        **training: Any,
    ) -> None:
        """``training``: the optimiser settings every model shares (:class:`Recommender`: lr, weight_decay, ...)."""
        super().__init__(n_items=n_items, max_len=max_len, **training)
        if not 0.0 < mask_prob < 1.0:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.mask_prob={mask_prob} must be between 0 and 1 (exclusive); e.g. 0.2.")
        if not 0.0 <= next_item_ratio <= 1.0:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.next_item_ratio={next_item_ratio} must be between 0 and 1; e.g. 0.5.")
        if next_item_weight < 0.0:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.next_item_weight={next_item_weight} must be at least 0 (0 = off); e.g. 1.0.")
        self.save_hyperparameters()
        self.next_item_ratio = next_item_ratio
        self.next_item_weight = next_item_weight
        self.mask_id = n_items + 1
        self.mask_prob = mask_prob
        self.item_embedding = nn.Embedding(n_items + 2, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len + 1, hidden_size)  # a window: max_len + 1 items
        self.dropout = FastDropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, inner_size, dropout) for _ in range(num_layers)
        )
        # Tied item embeddings score the output directly: BERT's dense + GELU + LayerNorm head in front
        # of them learned a simple successor rule several times slower in our tests.
        self.final_norm = nn.LayerNorm(hidden_size)
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.apply(init_weights)

    @staticmethod
    def positions(sequence: torch.Tensor) -> torch.Tensor:
        """Position of each column of a left-padded ``sequence``, counted from its oldest item (0)."""
        return ((sequence > 0).cumsum(1) - 1).clamp(min=0)

    def encode(self, sequence: torch.Tensor, last_only: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Output ``[B, L, H]`` at every position of a left-padded ``sequence`` (``[B, 1, H]``: the last; with
        ``rows``, bool ``[B, L]``: those positions alone, packed ``[N, H]``, which the last block computes alone)."""
        x = self.dropout(self.item_embedding(sequence) + self.position_embedding(self.positions(sequence)))
        mask = attention_mask(sequence, causal=False)
        for index, block in enumerate(self.blocks):
            last = index == len(self.blocks) - 1
            x = block(x, mask, tail=int(last_only and last), rows=rows if last else None)
        return self.final_norm(x)

    def encode_prefixes(self, sequence: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``[B, L - start, H]``: at each column ``j >= start``, the output of a [MASK] appended after the items
        before ``j``.

        One pass over ``[content; queries]`` (``L`` items and a query for each column from ``start``):
        content column ``i`` sees the real items up to ``i``; the query of column ``j`` (the [MASK]
        token at the position of item ``j``) sees the real items before ``j`` and itself, never item
        ``j`` or anything after it. Content never sees a query and queries never see each other, so a
        query exists only where a target is (``start``), and the last block computes the queries alone.
        """
        length = sequence.shape[1]
        device = sequence.device
        positions = self.position_embedding(self.positions(sequence))
        content = self.item_embedding(sequence) + positions
        queries = self.item_embedding.weight[self.mask_id] + positions[:, start:]
        x = self.dropout(torch.cat([content, queries], dim=1))
        n_queries = length - start
        keys = torch.arange(length, device=device)
        content_rows = torch.cat(  # causal over the real items; never a query
            [
                attention_mask(sequence, causal=True),
                torch.zeros(len(sequence), 1, length, n_queries, dtype=torch.bool, device=device),
            ],
            dim=-1,
        )
        query_rows = torch.cat(  # the real items before the query's column, and the query itself
            [
                (sequence > 0)[:, None, None, :] & (keys[None, :] < keys[start:, None]),
                torch.eye(n_queries, dtype=torch.bool, device=device).expand(len(sequence), 1, -1, -1),
            ],
            dim=-1,
        )
        mask = torch.cat([content_rows, query_rows], dim=2)
        for index, block in enumerate(self.blocks):
            x = block(x, mask, tail=n_queries if index == len(self.blocks) - 1 else 0)
        return self.final_norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of padding and every real item (not [MASK]): ``[..., n_items + 1]``."""
        return hidden @ self.item_embedding.weight[: self.n_items + 1].T + self.output_bias

    def mask_items(self, sequence: torch.Tensor) -> torch.Tensor:
        """Where to hide items: each real item with probability ``mask_prob``, and a row's last item if none was.

        Padding is never masked. The fallback keeps every window contributing, and trains the case
        ranking asks for (the item after the history).
        """
        real = sequence > 0
        masked = real & (torch.rand(sequence.shape, device=sequence.device) < self.mask_prob)
        none = ~masked.any(1)
        masked[:, -1] |= none & real[:, -1]
        return masked

    def cut_for_next_item(self, sequence: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a ``next_item_ratio`` share of windows into next-item samples: a random real position with
        at least one item before it is the only one masked, and the items after it become padding."""
        real = sequence > 0
        count = real.sum(1)
        chosen = (torch.rand(len(sequence), device=sequence.device) < self.next_item_ratio) & (count >= 2)
        first = sequence.shape[1] - count  # left-padded: the real items fill the last `count` columns
        cut = first + 1 + (torch.rand(len(sequence), device=sequence.device) * (count - 1)).long().clamp(min=0)
        columns = torch.arange(sequence.shape[1], device=sequence.device)
        sequence = torch.where(chosen[:, None] & (columns > cut[:, None]), 0, sequence)
        masked = torch.where(chosen[:, None], columns == cut[:, None], masked)
        return sequence, masked

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, next_items = trim_padding(batch[keys.HISTORY], batch[keys.NEXT_ITEMS])
        window = torch.cat([history, next_items[:, -1:]], dim=1)  # history + its last item
        sequence, masked = window, self.mask_items(window)
        if self.next_item_ratio:
            sequence, masked = self.cut_for_next_item(sequence, masked)
        hidden = self.encode(sequence.masked_fill(masked, self.mask_id), rows=masked)
        loss = self.masked_item_loss(hidden, sequence[masked])
        if self.next_item_weight:
            # Item j + 1 is the target of the prefix up to j where the window has a next-item target; queries
            # start at the first column that has one (with data.window_stride, the last `stride` columns).
            targets = next_items > 0
            if targets.any():
                first = int(targets.any(0).int().argmax())
                hidden = self.encode_prefixes(window, start=first + 1)[targets[:, first:]]
                loss = loss + self.next_item_weight * self.masked_item_loss(
                    hidden, next_items[:, first:][targets[:, first:]]
                )
        return loss

    def masked_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy of ``targets [N]`` from the outputs ``hidden [N, H]`` at their [MASK]s."""
        logits = self.item_logits(hidden)
        logits[:, 0] = -torch.inf
        return F.cross_entropy(logits, targets)

    def last_output(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, H]``: the output at a [MASK] appended after each (trimmed) history."""
        history = trim_padding(batch[keys.HISTORY][:, -self.max_len :])[0]
        sequence = torch.cat([history, torch.full_like(history[:, :1], self.mask_id)], dim=1)
        return self.encode(sequence, last_only=True)[:, -1]

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_logits(self.last_output(batch))

    def score(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        last = self.last_output(batch)
        return (self.item_embedding(item_ids) * last.unsqueeze(1)).sum(-1) + self.output_bias[item_ids]
