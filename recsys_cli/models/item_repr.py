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
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.errors import RecsysError

FUSIONS = ("id", "add", "concat", "gate", "text")
ADAPTORS = ("linear", "moe")


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
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise RecsysError(f"unknown model.fusion '{fusion}'; use one of: {', '.join(FUSIONS)}.")
        self.fusion = fusion
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
        return self.adaptor((self.text_features - self.text_mean) / self.text_scale)

    def forward(self) -> torch.Tensor:
        if self.fusion == "id":
            return self.id_embedding.weight
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
