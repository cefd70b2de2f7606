"""The typed description of a dataset that every model is built from: :class:`DataSpec`.

A model family's prepared data describes itself once as a ``DataSpec`` (sizes, id-derived tensors, label
names, target scale); each model class says which of its constructor arguments come from it
(``data_arguments(spec)``), so no task reads a model's signature and no model reads a config.

A checkpoint stores the spec as plain types (:meth:`DataSpec.to_meta`): tensors as their shape and dtype
only, since their values are model buffers already saved in the weights. :meth:`DataSpec.from_meta` gives
back a spec whose tensors are zeros of that shape, so the model is rebuilt with buffers of the right size
and ``load_state_dict`` fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class DataSpec:
    """What a model may learn from the data, whichever family it belongs to.

    Interaction data: ``n_users``, ``n_items`` (indices ``1..n``; 0 is padding), ``max_len`` (the history
    length batches carry), ``items`` (the item table: id, title, text, category) from which
    :meth:`item_word_features` derives, on first use, ``item_features`` (``[n_items + 1, F]`` word indices of
    each item's text, 0 = padding) and its vocabulary size ``item_feature_vocab``; the encoder embeddings of
    item and query text (``item_text_features``, ``query_features``) are filled in by
    :mod:`recsys_cli.data.content`, which this module never imports (it loads encoders and checkpoints).
    Text data: ``task``, ``label_names`` (class index → name), ``oos_label`` (the out-of-scope class, if
    any), and for regression the training targets' ``target_mean`` and ``target_std``.
    """

    n_users: int = 0
    n_items: int = 0
    max_len: int = 0
    # The item table stays with the processed data: a checkpoint keeps only what derives from it.
    items: pd.DataFrame | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    item_features: torch.Tensor | None = None
    item_feature_vocab: int = 0
    # Where the processed data lives (item text embeddings are cached there); not stored in checkpoints.
    folder: Path | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    item_counts: torch.Tensor | None = None  # [n_items + 1] training events per item (0: never seen in training)
    item_text_features: torch.Tensor | None = None
    item_text_encoder: str | None = None
    # Tuning the text encoder's top layers: the hidden states entering them [n_items + 1, T, D], and their mask.
    item_text_hidden: torch.Tensor | None = None
    item_text_mask: torch.Tensor | None = None
    # What users say (recsys_cli.data.queries): distinct query texts (0: none), the query of each processed
    # event, and named groups of events (e.g. those that open a session); data, not model: never stored.
    query_texts: list[str] | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    event_queries: Any = field(default=None, repr=False, compare=False, metadata={"stored": False})
    event_groups: dict[str, Any] | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    query_features: torch.Tensor | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    # Per query text: does the intent model that embedded it call it none of its intents (None: no such rule)?
    # Is it a training event's query, or like one (cosine to the nearest at least ``query_floor``)?
    query_out_of_scope: Any = field(default=None, repr=False, compare=False, metadata={"stored": False})
    query_in_training: Any = field(default=None, repr=False, compare=False, metadata={"stored": False})
    query_like_training: Any = field(default=None, repr=False, compare=False, metadata={"stored": False})
    query_floor: float | None = field(default=None, repr=False, compare=False, metadata={"stored": False})
    # Reviews as queries: per user, the query index of their next event (their latest review).
    next_queries: Any = field(default=None, repr=False, compare=False, metadata={"stored": False})
    task: str | None = None
    label_names: list[str] | None = None
    oos_label: int | None = None
    target_mean: float | None = None
    target_std: float | None = None

    @property
    def n_labels(self) -> int:
        """Outputs of a text model's head: one per label, or one for a numeric target."""
        return len(self.label_names or []) or 1

    def item_word_features(self) -> tuple[torch.Tensor | None, int]:
        """``item_features`` and ``item_feature_vocab``, derived from ``items`` the first time a model asks
        (tokenising every title costs ~40 s per million items: models that read no item text never pay it)."""
        if self.item_features is None and self.items is not None:
            from recsys_cli.data.features import item_feature_tokens

            self.item_features = torch.from_numpy(item_feature_tokens(self.items, self.n_items))
            self.item_feature_vocab = int(self.item_features.max()) + 1
        return self.item_features, self.item_feature_vocab

    def to_meta(self) -> dict[str, Any]:
        """Plain types only (``torch.load(weights_only=True)`` reads them); tensors as shape and dtype.

        Called once the model is built, so it holds the derived tensors that model took (and no others).
        """
        meta: dict[str, Any] = {}
        for spec_field in fields(self):
            if not spec_field.metadata.get("stored", True):
                continue
            value = getattr(self, spec_field.name)
            if isinstance(value, torch.Tensor):
                value = {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
            meta[spec_field.name] = value
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DataSpec:
        """The spec a checkpoint stored; its tensors are zeros of the stored shape (the weights refill them)."""
        known = {spec_field.name for spec_field in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in meta.items():
            if name not in known:
                continue
            if isinstance(value, dict) and "tensor" in value:
                value = torch.zeros(value["tensor"], dtype=getattr(torch, value["dtype"]))
            values[name] = value
        return cls(**values)
