"""The intent-aware, text-aware SASRec: items read through a language model, conditioned on what the user says.

SASRec's causal self-attention (:class:`~recsys_cli.models.sasrec.SASRec`) over items whose vectors come
from an :class:`~recsys_cli.models.item_repr.ItemRepresentation`: a frozen transformer encoder
(``text_encoder``: the packaged MiniLM, any Hugging Face encoder folder or hub id, or a fine-tuned
``bert_intent`` checkpoint) embeds every item's text once (cached in the processed data folder,
:mod:`recsys_cli.data.content`); a learned adaptor maps those embeddings into the model's space, and
``fusion`` combines them with ID embeddings (``add``, ``concat``, ``gate``), or uses them alone
(``text``: inductive, any item with text can be ranked, including items never seen in training).
The same item table embeds the input history and scores the next item, as in UniSRec (Hou et al., KDD
2022) and the text-ID fusion models that followed.

User intent: when the data's events answer a query (:mod:`recsys_cli.data.queries`, e.g. the synthetic
shop's session queries), the query encoder (``intent_checkpoint``, a fine-tuned ``bert_intent`` whose
pooled embedding and predicted intent distribution are both used; else ``text_encoder``) embeds every
query once, and each position is conditioned on the query of the item it predicts
(``query_conditioning``): added to that position's input (``input``: attention can weigh the history by
it), to its output (``output``: a shift of the final user vector towards the query), or ``both``; ``none``
ignores queries. ``query_dropout`` hides a share of the queries while training, so the model learns to read
the history too (without it, an ID-only model can stall on what the query alone tells). A learned start
token opens every sequence, so a user with a query and no history is ranked by the query alone, and every
user's first event is a training target. An intent checkpoint trained with an out-of-scope label marks the
queries that are none of its intents; with ``oos_queries=history`` (the default) they are read as no query,
in training, evaluation and predict alike, so such a position is predicted from the history alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError
from recsys_cli.models.components import init_weights, trim_padding
from recsys_cli.models.item_repr import TEXT_DATA, TextItems, standardisation
from recsys_cli.models.sasrec import SASRec

CONDITIONING = ("none", "input", "output", "both")
# A query the intent model calls none of its intents: read as no query (history), or as given (keep).
OOS_QUERIES = ("history", "keep")


def oos_queries_mode(value: Any, option: str = "model.oos_queries") -> str:
    """``value`` checked as an out-of-scope query handling (:data:`OOS_QUERIES`)."""
    if value not in OOS_QUERIES:
        raise RecsysError(f"unknown {option} '{value}'; use one of: {', '.join(OOS_QUERIES)}.")
    return str(value)


def query_encoder(settings: dict[str, Any]) -> str:
    """The encoder of user queries: the intent checkpoint when one is given, else the item text encoder."""
    return settings.get("intent_checkpoint") or settings.get("text_encoder", "minilm-packaged")


def read_queries(data: DataSpec, settings: dict[str, Any], oos_queries: str | None = None) -> torch.Tensor | None:
    """The features of the data's queries as a model with these settings reads them (None: it reads none,
    or the data has none). Queries the intent checkpoint calls out of scope are all-zero rows (no query:
    the history alone), unless they are training events' queries or like one (the recommender learned what
    they lead to), or ``oos_queries`` (default: the settings' ``oos_queries``) is ``keep``."""
    from recsys_cli.data.content import query_features

    if settings.get("query_conditioning", "input") == "none":
        return None
    features = query_features(
        data,
        query_encoder(settings),
        max_length=settings.get("text_max_length", 64),
        batch_size=settings.get("text_batch_size", 128),
    )
    outside = data.query_out_of_scope
    if outside is not None and data.query_like_training is not None:
        outside = outside & ~data.query_like_training  # the recommender learned such words: they stay
    if oos_queries is not None:
        mode = oos_queries_mode(oos_queries, "eval.oos_queries")
    else:
        mode = oos_queries_mode(settings.get("oos_queries", "history"))
    if features is None or outside is None or mode == "keep" or not outside.any():
        return features
    return features.masked_fill(torch.from_numpy(outside).unsqueeze(1), 0.0)


class IntentSASRec(TextItems, SASRec):
    default_fusion = "add"

    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """SASRec's, plus the frozen text embedding of every item (unless ``fusion=id``) and, when the data
        has queries and the model reads them, the size and statistics of their features."""
        settings = dict(settings or {})
        arguments = super().data_arguments(data, settings)
        features = read_queries(data, settings)
        if features is not None:
            mean, scale = standardisation(features)
            arguments.update(query_size=features.shape[1], query_stats=torch.stack([mean, scale.expand_as(mean)]))
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
        text_tuning: str = "frozen",
        tuned_layers: int = 1,
        text_lr: float = 1e-4,
        lora_r: int = 8,
        lora_alpha: int = 16,
        item_text_layers: dict[str, Any] | None = None,
        text_encoder_config: dict[str, Any] | None = None,
        text_pooling: str = "mean",
        intent_checkpoint: str | None = None,
        query_conditioning: str = "input",
        query_dropout: float = 0.0,
        oos_queries: str = "history",
        query_size: int = 0,
        query_stats: torch.Tensor | None = None,
        hidden_size: int = 64,
        **sasrec: Any,
    ) -> None:
        """``sasrec``: SASRec's own settings (layers, heads, dropout, loss, ...) and the shared training ones.
        ``query_size`` and ``query_stats`` (mean and scale of the query features) come from the data, as do
        ``item_text_layers`` and, when training starts, ``text_encoder_config`` and ``text_pooling`` (kept in
        the hyperparameters: the tuned layers are rebuilt from them)."""
        if query_conditioning not in CONDITIONING:
            raise RecsysError(
                f"unknown model.query_conditioning '{query_conditioning}'; use one of: {', '.join(CONDITIONING)}."
            )
        oos_queries_mode(oos_queries)
        super().__init__(n_items=n_items, max_len=max_len, hidden_size=hidden_size, **sasrec)
        self.save_hyperparameters(ignore=[*TEXT_DATA, "query_stats"])
        del self.item_embedding  # the item representation owns the ID embedding (when it has one)
        arguments = dict(locals())
        self.build_items(n_items, hidden_size, self.split_text_settings(arguments)[0], always=True)
        self.conditioning = query_conditioning if query_size else "none"
        self.query_size = query_size
        if self.conditioning != "none":
            stats = query_stats if query_stats is not None else torch.stack([torch.zeros(query_size)] * 2)
            self.register_buffer("query_mean", stats[0].float().clone())
            self.register_buffer("query_scale", stats[1].float().clone().clamp(min=1e-6))
            self.query_noise = nn.Dropout(text_dropout)
            self.query_dropout = query_dropout
            self.start = nn.Parameter(torch.empty(hidden_size))
            self.position_embedding = nn.Embedding(max_len + 1, hidden_size)  # the start token takes one
            self.query_input = nn.Linear(query_size, hidden_size) if self.conditioning != "output" else None
            self.query_output = nn.Linear(query_size, hidden_size) if self.conditioning != "input" else None
            for module in (self.position_embedding, self.query_input, self.query_output):
                if module is not None:
                    init_weights(module)
            nn.init.trunc_normal_(self.start, std=0.02, a=-0.04, b=0.04)

    @property
    def query_encoder_name(self) -> str | None:
        """The encoder whose features of the user's query the model reads, or None when it reads none."""
        return query_encoder(dict(self.hparams)) if self.conditioning != "none" else None

    def query_features(self, data: DataSpec, oos_queries: str | None = None) -> torch.Tensor | None:
        """The features of ``data``'s queries this model reads (the datamodule carries them in batches);
        ``oos_queries`` overrides the model's handling of out-of-scope queries (``eval.oos_queries``)."""
        return read_queries(data, dict(self.hparams), oos_queries) if self.conditioning != "none" else None

    # --- the start token and the queries ----------------------------------------------------------
    def _with_start(
        self, history: torch.Tensor, next_items: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, L + 1]``: the start token (index ``n_items + 1``) put right before each row's first item
        (in the last column for an empty history); with ``next_items``, the first item becomes the start
        token's target where the row holds the user's whole history (it was padded)."""
        rows = torch.arange(history.shape[0], device=history.device)
        real = history > 0
        first = torch.where(real.any(1), real.int().argmax(1), torch.full_like(rows, history.shape[1]))
        extended = torch.cat([history.new_zeros(history.shape[0], 1), history], dim=1)
        extended[rows, first] = self.n_items + 1
        if next_items is None:
            return extended, None
        targets = torch.cat([next_items.new_zeros(next_items.shape[0], 1), next_items], dim=1)
        whole = (first > 0) & (first < history.shape[1])
        first_item = history[rows, first.clamp(max=history.shape[1] - 1)]
        targets[rows, first] = torch.where(whole, first_item, targets[rows, first])
        return extended, targets

    def _queries(self, batch: dict[str, torch.Tensor], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised query features ``[B, L + 1, Dq]`` and whether each position has a query ``[B, L + 1, 1]``."""
        queries = batch.get(keys.QUERIES)
        if queries is None:
            queries = torch.zeros(*shape, self.query_size, device=self.start.device)
        queries = queries.float()
        present = (queries.abs().sum(-1, keepdim=True) > 0).to(queries.dtype)
        if self.training and self.query_dropout > 0:  # some targets must be predicted from the history alone
            present = present * (torch.rand_like(present) >= self.query_dropout)
        return self.query_noise((queries - self.query_mean) / self.query_scale) * present, present

    def encode(
        self,
        history: torch.Tensor,
        last_only: bool = False,
        table: torch.Tensor | None = None,
        queries: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """SASRec's hidden states; with queries (``[B, L, Dq]`` features and presence, aligned with
        ``history``), each position conditioned on the query of the item it predicts."""
        table = self.item_table() if table is None else table
        if self.conditioning == "none":
            return super().encode(history, last_only, table)
        features, present = queries
        inputs = self.query_input(features) * present if self.query_input is not None else None
        vectors = torch.cat([table, self.start.unsqueeze(0).to(table.dtype)])  # index n_items + 1: the start token
        x = super().encode(history, last_only, vectors, inputs=inputs)
        if self.query_output is not None:
            tail = x.shape[1]
            x = x + self.query_output(features[:, -tail:]) * present[:, -tail:]
        return x

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.conditioning == "none":
            return super().loss(batch)
        history, next_items = self._with_start(batch[keys.HISTORY], batch[keys.NEXT_ITEMS])
        features, present = self._queries(batch, history.shape)
        history, next_items, features, present = trim_padding(history, next_items, features, present)
        has_target = next_items > 0
        table = self.item_table()
        hidden = self.encode(history, table=table, queries=(features, present))[has_target]
        return self.next_item_loss(hidden, next_items[has_target], table)

    def query_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.conditioning == "none":
            return super().query_vectors(batch)
        history, _ = self._with_start(batch[keys.HISTORY])
        features, present = self._queries(batch, history.shape)
        history, features, present = trim_padding(history, features, present)
        return self.encode(history, last_only=True, queries=(features, present))[:, -1]
