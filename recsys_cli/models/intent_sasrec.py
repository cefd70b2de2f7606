"""The text-aware SASRec: items are represented by their ID and what a language model reads in their text.

SASRec's causal self-attention (:class:`~recsys_cli.models.sasrec.SASRec`) over items whose vectors come
from an :class:`~recsys_cli.models.item_repr.ItemRepresentation`: a frozen transformer encoder
(``text_encoder``: the packaged MiniLM, any Hugging Face encoder folder or hub id, or a fine-tuned
``bert_intent`` checkpoint) embeds every item's text once (cached in the processed data folder,
:mod:`recsys_cli.data.content`); a learned adaptor maps those embeddings into the model's space, and
``fusion`` combines them with ID embeddings (``add``, ``concat``, ``gate``), or uses them alone
(``text``: inductive, any item with text can be ranked, including items never seen in training).
The same item table embeds the input history and scores the next item, as in UniSRec (Hou et al., KDD
2022) and the text-ID fusion models that followed.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_cli.data.spec import DataSpec
from recsys_cli.models.item_repr import ItemRepresentation
from recsys_cli.models.sasrec import SASRec


class IntentSASRec(SASRec):
    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """SASRec's, plus the frozen text embedding of every item (unless ``fusion=id``)."""
        settings = dict(settings or {})
        arguments = super().data_arguments(data, settings)
        if settings.get("fusion", "add") != "id":
            arguments["item_counts"] = data.item_counts
            arguments["item_text"] = data.item_text_embeddings(
                settings.get("text_encoder", "minilm-packaged"),
                max_length=settings.get("text_max_length", 64),
                batch_size=settings.get("text_batch_size", 128),
            )
        return arguments

    def __init__(
        self,
        n_items: int,
        max_len: int,
        item_text: torch.Tensor | None = None,
        item_counts: torch.Tensor | None = None,
        text_encoder: str = "minilm-packaged",
        text_max_length: int = 64,
        text_batch_size: int = 128,
        fusion: str = "add",
        adaptor: str = "linear",
        n_experts: int = 8,
        text_dropout: float = 0.2,
        hidden_size: int = 64,
        **sasrec: Any,
    ) -> None:
        """``sasrec``: SASRec's own settings (layers, heads, dropout, loss, ...) and the shared training ones."""
        super().__init__(n_items=n_items, max_len=max_len, hidden_size=hidden_size, **sasrec)
        self.save_hyperparameters(ignore=["item_text", "item_counts"])
        del self.item_embedding  # the item representation owns the ID embedding (when it has one)
        self.items = ItemRepresentation(
            n_items,
            hidden_size,
            fusion=fusion,
            text_features=item_text,
            adaptor=adaptor,
            n_experts=n_experts,
            dropout=text_dropout,
            item_counts=item_counts,
        )

    def item_table(self) -> torch.Tensor:
        return self.items()
