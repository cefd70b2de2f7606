"""How a sequence model represents items: an ID embedding, the item's text through an adaptor, or both.

:class:`ItemRepresentation` is one ``nn.Module`` any next-item model can own in place of its
``nn.Embedding``: calling it gives the whole item table ``[n_items + 1, H]`` (row 0 = padding, zeros),
which the model indexes for its input sequence and multiplies with for its scores and loss, so inputs,
training and ranking all see the same vectors.

- ``fusion``: ``id`` (a plain ID embedding, as SASRec), ``text`` (the adapted text embedding alone:
  inductive, so an item never seen in training is scored by its text), ``add`` (ID + text), ``concat``
  (a linear map of both, concatenated) or ``gate`` (a learned per-dimension sigmoid gate between them).
  With text, items without training events (``item_counts`` 0: new items) get no ID part: an ID vector
  that never met a positive only learns to score low.
- ``adaptor``: how frozen text embeddings (:mod:`recsys_cli.data.content`) enter the model's space:
  ``linear`` (whitening bias + one linear map) or ``moe`` (UniSRec's parametric whitening with a mixture
  of experts, Hou et al., KDD 2022: expert ``e`` maps ``(x - b_e) W_e``, a softmax gate over ``x`` mixes).
  The frozen features are first centred and scaled by their dataset statistics (buffers, saved with
  the model), so one learning rate suits any encoder.
- ``text_tuning``: ``frozen`` (the cached embeddings), or the encoder's top ``tuned_layers`` layers trained
  with the recommender (``top``: all their weights; ``lora``: low-rank adapters on their attention
  projections, Hu et al. 2021, via ``peft``). The layers below stay frozen, so the hidden states that enter
  the tuned ones are computed once (:meth:`recsys_cli.data.content.TextEmbedder.layer_inputs`) and every
  step runs only the top layers over the catalogue (:class:`TunedText`), in chunks of similar length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recsys_cli.errors import RecsysError
from recsys_cli.runtime import inference_autocast

FUSIONS = ("id", "add", "concat", "gate", "text")
ADAPTORS = ("linear", "moe")
TUNINGS = ("frozen", "top", "lora")
CHUNK_ITEMS = 256  # item texts per chunk through the tuned layers (sorted by length: little padding)


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and per-dimension scale ``[]`` of the non-zero rows after row 0 (padding / no text): frozen
    features minus the mean, divided by the scale, have unit mean square per dimension, whatever the encoder."""
    real = features[1:][features[1:].abs().sum(1) > 0].float()
    if len(real) < 2:
        return torch.zeros(features.shape[1]), torch.tensor(1.0)
    mean = real.mean(0)
    scale = (real - mean).pow(2).sum(1).mean().sqrt().clamp(min=1e-6) * features.shape[1] ** -0.5
    return mean, scale


class TextAdaptor(nn.Module):
    """Frozen text embeddings ``[N, D]`` → ``[N, H]``: whitening bias and linear map per expert, gated mix."""

    def __init__(self, in_size: int, out_size: int, kind: str = "linear", n_experts: int = 8, dropout: float = 0.2):
        super().__init__()
        if kind not in ADAPTORS:
            raise RecsysError(f"unknown model.adaptor '{kind}'; use one of: {', '.join(ADAPTORS)}.")
        experts = 1 if kind == "linear" else n_experts
        if experts < 1:
            raise RecsysError(f"model.n_experts={n_experts} must be at least 1.")
        self.dropout = nn.Dropout(dropout)
        self.whiten = nn.Parameter(torch.zeros(experts, in_size))
        self.weight = nn.Parameter(torch.empty(experts, in_size, out_size))
        nn.init.trunc_normal_(self.weight, std=in_size**-0.5 / 4, a=-2 * in_size**-0.5, b=2 * in_size**-0.5)
        self.gate = nn.Linear(in_size, experts, bias=False) if experts > 1 else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)  # experts start equally weighted

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        mapped = torch.einsum("nd,edh->neh", x, self.weight) - torch.einsum("ed,edh->eh", self.whiten, self.weight)
        if self.gate is None:
            return mapped[:, 0]
        return (torch.softmax(self.gate(x), dim=-1).unsqueeze(-1) * mapped).sum(1)


class TunedText(nn.Module):
    """The top layers of a transformer encoder, trained, over the cached hidden states that enter them.

    ``hidden`` ``[N, T, D]`` and ``mask`` ``[N, T]`` (bf16 and bool buffers, saved with the model so a
    checkpoint needs no encoder to score), ``config``: the encoder's config dict (the layers are rebuilt from
    it; ``layers``, their pretrained weights, when training starts). Calling it gives the pooled text vector
    of every row ``[N, D]`` (rows without text: zeros).
    """

    def __init__(
        self,
        config: dict[str, Any],
        n_layers: int,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        layers: dict[str, torch.Tensor] | None = None,
        tuning: str = "top",
        pooling: str = "mean",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from recsys_cli.models.encoders import lora_targets, transformer_layers

        if tuning not in TUNINGS[1:]:
            raise RecsysError(f"unknown model.text_tuning '{tuning}'; use one of: {', '.join(TUNINGS)}.")
        settings = {key: value for key, value in config.items() if key != "model_type"}
        encoder = AutoModel.from_config(AutoConfig.for_model(config["model_type"], **settings))
        self.layers = nn.ModuleList(list(transformer_layers(encoder))[-n_layers:])
        if layers is not None:
            self.layers.load_state_dict(layers)
        if tuning == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(
                r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=lora_targets(self.layers, None),
            )
            inject_adapter_in_model(lora, self.layers)
            for name, parameter in self.layers.named_parameters():
                parameter.requires_grad_("lora_" in name)
        self.pooling = pooling
        self.register_buffer("hidden", hidden.to(torch.bfloat16))
        self.register_buffer("mask", mask.bool())

    def forward(self) -> torch.Tensor:
        lengths = self.mask.sum(1)
        rows = torch.nonzero(lengths > 0).squeeze(1)
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        out = self.hidden.new_zeros(self.hidden.shape[0], self.hidden.shape[2], dtype=torch.float32)
        for chunk in rows.split(CHUNK_ITEMS):
            width = int(lengths[chunk].max())
            mask = self.mask[chunk, :width]
            x = self.hidden[chunk, :width].float()
            additive = (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min
            # The layers run in bf16 where the hardware computes it natively (the catalogue pass dominates a step).
            with inference_autocast("auto", "cuda" if x.is_cuda else "cpu"):
                for layer in self.layers:
                    x = layer(x, additive)
                    x = x[0] if isinstance(x, tuple) else x
            if self.pooling == "cls":
                pooled = x[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(x.dtype)
                pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            out = out.index_copy(0, chunk, pooled.float())
        return out


class ItemRepresentation(nn.Module):
    """The item table ``[n_items + 1, H]`` from ID embeddings and/or adapted frozen text embeddings."""

    def __init__(
        self,
        n_items: int,
        hidden_size: int,
        fusion: str = "id",
        text_features: torch.Tensor | None = None,
        adaptor: str = "linear",
        n_experts: int = 8,
        dropout: float = 0.2,
        item_counts: torch.Tensor | None = None,
        tuned_text: TunedText | None = None,
    ) -> None:
        """``tuned_text``: the encoder's top layers trained with the model (their pooled output replaces
        ``text_features``, which then only give the standardisation statistics)."""
        super().__init__()
        if fusion not in FUSIONS:
            raise RecsysError(f"unknown model.fusion '{fusion}'; use one of: {', '.join(FUSIONS)}.")
        self.fusion = fusion
        self._cache: torch.Tensor | None = None  # the table in eval mode (see forward)
        self.id_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0) if fusion != "text" else None
        if self.id_embedding is not None:
            nn.init.trunc_normal_(self.id_embedding.weight, std=0.02, a=-0.04, b=0.04)
            self.id_embedding.weight.data[0].zero_()
        self.adaptor: TextAdaptor | None = None
        if fusion != "id":
            if text_features is None or text_features.shape[0] != n_items + 1:
                raise RecsysError("this item representation needs text features for every item; set model.fusion=id.")
            features = text_features.float()
            mean, scale = standardisation(features)
            self.register_buffer("text_features", features)
            self.register_buffer("text_mean", mean)
            self.register_buffer("text_scale", scale.reshape(()).clamp(min=1e-6))
            self.adaptor = TextAdaptor(features.shape[1], hidden_size, adaptor, n_experts, dropout)
        self.tuned_text = tuned_text if fusion != "id" else None
        if fusion == "concat":
            self.mix = nn.Linear(2 * hidden_size, hidden_size)
        elif fusion == "gate":
            self.mix = nn.Linear(2 * hidden_size, hidden_size)
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)  # starts as the mean of the two
        self.register_buffer("padding_mask", torch.ones(n_items + 1, 1).index_fill_(0, torch.tensor([0]), 0.0))
        # An item never seen in training has no ID vector to learn (as a negative it would only be pushed
        # down): with text it is represented by its text alone.
        known = torch.ones(n_items + 1) if item_counts is None else (item_counts > 0).float()
        self.register_buffer("known_ids", known.unsqueeze(1))

    def text_table(self) -> torch.Tensor:
        """The adapted text embedding of every item ``[n_items + 1, H]``."""
        assert self.adaptor is not None
        features = self.text_features if self.tuned_text is None else self.tuned_text()
        return self.adaptor((features - self.text_mean) / self.text_scale)

    # Scoring asks for the table more than once per batch (the history's inputs, then the scores); with text it is
    # computed, so in eval mode without gradients it is computed once and kept until the weights can change
    # (training, loading weights, moving the module).
    def train(self, mode: bool = True) -> ItemRepresentation:
        self._cache = None
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ItemRepresentation:
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self) -> torch.Tensor:
        if self.fusion == "id":
            return self.id_embedding.weight
        if self._cache is not None and not self.training and not torch.is_grad_enabled():
            return self._cache
        table = self._table()
        if not self.training and not torch.is_grad_enabled():
            self._cache = table
        return table

    def _table(self) -> torch.Tensor:
        text = self.text_table()
        if self.fusion == "text":
            table = text
        else:
            ids = self.id_embedding.weight * self.known_ids
            if self.fusion == "add":
                table = ids + text
            elif self.fusion == "concat":
                table = self.mix(torch.cat([ids, text], dim=-1))
            else:
                gate = torch.sigmoid(self.mix(torch.cat([ids, text], dim=-1)))
                table = gate * ids + (1 - gate) * text
        return table * self.padding_mask


def item_text_arguments(data: Any, settings: dict[str, Any], fusion_default: str = "add") -> dict[str, Any]:
    """The data arguments of a model that owns an :class:`ItemRepresentation` with these ``settings``: the
    items' training counts and frozen text embeddings (unless ``fusion=id``) and, when the encoder's top layers
    are tuned, the hidden states entering them (and, when training starts, their weights and the encoder's
    config and pooling)."""
    from recsys_cli.data.content import item_text_features, item_text_layers

    if settings.get("fusion", fusion_default) == "id":
        return {}
    encoder = settings.get("text_encoder", "minilm-packaged")
    sizes = {"max_length": settings.get("text_max_length", 64), "batch_size": settings.get("text_batch_size", 128)}
    arguments: dict[str, Any] = {
        "item_counts": data.item_counts,
        "item_text": item_text_features(data, encoder, **sizes),
    }
    if settings.get("text_tuning", "frozen") != "frozen":
        inputs = item_text_layers(data, encoder, int(settings.get("tuned_layers", 1)), **sizes)
        arguments["item_text_layers"] = inputs
        if inputs["config"] is not None:
            arguments.update(text_encoder_config=inputs["config"], text_pooling=inputs["pooling"])
    return arguments


def tuned_text(
    item_text_layers: dict[str, Any] | None,
    text_tuning: str,
    tuned_layers: int,
    text_encoder_config: dict[str, Any] | None,
    text_pooling: str,
    lora_r: int,
    lora_alpha: int,
) -> TunedText | None:
    """The :class:`TunedText` of a model's settings, or None when the text encoder stays frozen."""
    if text_tuning not in TUNINGS:
        raise RecsysError(f"unknown model.text_tuning '{text_tuning}'; use one of: {', '.join(TUNINGS)}.")
    if text_tuning == "frozen" or item_text_layers is None:
        return None
    if text_encoder_config is None:
        raise RecsysError("the checkpoint holds no text encoder config for its tuned layers; retrain it.")
    return TunedText(
        text_encoder_config,
        tuned_layers,
        item_text_layers["hidden"],
        item_text_layers["mask"],
        item_text_layers.get("layers"),
        tuning=text_tuning,
        pooling=text_pooling,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
    )


# The settings of a model's item representation, with their defaults (conf/model/base/item_text.yaml), and
# the arguments that come from the data.
TEXT_SETTINGS: dict[str, Any] = {
    "fusion": "id",
    "text_encoder": "minilm-packaged",
    "text_max_length": 64,
    "text_batch_size": 128,
    "adaptor": "linear",
    "n_experts": 8,
    "text_dropout": 0.2,
    "text_tuning": "frozen",
    "tuned_layers": 1,
    "text_lr": 1e-4,
    "lora_r": 8,
    "lora_alpha": 16,
    "text_encoder_config": None,
    "text_pooling": "mean",
}
TEXT_DATA = ("item_text", "item_counts", "item_text_layers")


class TextItems:
    """Mixin for a :class:`~recsys_cli.models.base.DotProductRecommender`: items represented by ID embeddings
    or, with ``fusion`` other than ``id``, by an :class:`ItemRepresentation` that reads their text.

    The model passes its extra keyword arguments through :meth:`split_text_settings`, builds its item table
    with :meth:`build_items` and reads it through ``item_table()`` (inputs, loss and ranking alike). With
    ``fusion=id`` the table is a plain ``item_embedding``, as before, so ID-only checkpoints keep their names.
    """

    default_fusion = "id"

    @classmethod
    def data_arguments(cls, data: Any, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        settings = dict(settings or {})
        arguments = super().data_arguments(data, settings)  # type: ignore[misc]
        return {**arguments, **item_text_arguments(data, settings, fusion_default=cls.default_fusion)}

    @staticmethod
    def split_text_settings(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(item representation settings and data, the rest)`` of a model's keyword arguments."""
        text = {key: value for key, value in kwargs.items() if key in TEXT_SETTINGS or key in TEXT_DATA}
        return text, {key: value for key, value in kwargs.items() if key not in text}

    def build_items(self, n_items: int, size: int, text: dict[str, Any], always: bool = False) -> None:
        """``self.items`` (an :class:`ItemRepresentation`) or, for ``fusion=id`` unless ``always``,
        ``self.item_embedding``; ``text``: the settings and data :meth:`split_text_settings` found."""
        settings = {**TEXT_SETTINGS, "fusion": self.default_fusion}
        settings.update({key: value for key, value in text.items() if key in TEXT_SETTINGS})
        self.text_lr = settings["text_lr"]
        if settings["fusion"] == "id" and not always:
            self.items = None
            self.item_embedding = nn.Embedding(n_items + 1, size, padding_idx=0)
            return
        self.items = ItemRepresentation(
            n_items,
            size,
            fusion=settings["fusion"],
            text_features=text.get("item_text"),
            adaptor=settings["adaptor"],
            n_experts=settings["n_experts"],
            dropout=settings["text_dropout"],
            item_counts=text.get("item_counts"),
            tuned_text=tuned_text(
                text.get("item_text_layers"),
                settings["text_tuning"],
                settings["tuned_layers"],
                settings["text_encoder_config"],
                settings["text_pooling"],
                settings["lora_r"],
                settings["lora_alpha"],
            ),
        )

    def item_table(self) -> torch.Tensor:
        return self.items() if self.items is not None else self.item_embedding.weight

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The tuned text encoder layers learn at ``text_lr`` (pretrained weights: a smaller step)."""
        from recsys_cli.models.base import decay_groups

        tuned = self.items.tuned_text if self.items is not None else None
        if tuned is None:
            return super().optimizer_groups()  # type: ignore[misc]
        own = {id(p) for p in tuned.parameters()}
        rest = [p for p in self.parameters() if id(p) not in own]  # type: ignore[attr-defined]
        slow = decay_groups(tuned.parameters(), self.weight_decay, lr=self.text_lr)  # type: ignore[attr-defined]
        return decay_groups(rest, self.weight_decay) + slow  # type: ignore[attr-defined]
