"""Top-K ranking metrics on tensors, one value per user, no Python loop over users or items.

Inputs are the ranked item indices ``topk [B, K]`` and the held-out targets ``targets [B, T]``
(0 = padding, so a user may have several relevant items, as in a temporal split). Definitions follow
the usual full-ranking conventions (e.g. RecBole's and Krichene & Rendle 2020):

- HR@K: 1 if any target is in the top K.
- Precision@K: hits in the top K divided by K.  Recall@K: hits divided by the number of targets.
- NDCG@K (Järvelin & Kekäläinen 2002): DCG with gain 1 and discount 1/log2(rank + 1), divided by the
  ideal DCG of min(#targets, K) hits.
- MRR@K: 1 / rank of the first hit within the top K, else 0.

Beyond-accuracy metrics of the top-K lists themselves (the targets play no part), from the items'
training popularity ``counts [n_items + 1]`` (index 0 = padding):

- coverage@K: share of the catalogue that appears in at least one user's top K (a set over all users,
  so it is accumulated as an item mask, not averaged per user).
- novelty@K (Zhou et al. 2010, "Solving the apparent diversity-accuracy dilemma of recommender
  systems", PNAS): mean self-information ``-log2 p(i)`` of a user's recommended items, where
  ``p(i) = count(i) / sum of counts``; an item never seen in training counts as seen once (its
  self-information would otherwise be infinite).
- ARP@K, average recommendation popularity (Abdollahpouri et al. 2019, "Managing Popularity Bias in
  Recommender Systems with Personalized Re-ranking", FLAIRS): mean training count of a user's
  recommended items.
"""

from __future__ import annotations

import torch

METRICS = ("hr", "ndcg", "mrr", "recall", "precision")


def hit_matrix(topk: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` bool: whether the item at each rank is one of the user's targets."""
    valid = targets > 0
    return ((topk.unsqueeze(-1) == targets.unsqueeze(1)) & valid.unsqueeze(1)).any(-1)


def ranking_metrics(
    hits: torch.Tensor, n_targets: torch.Tensor, ks: list[int] | tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-user ``{"ndcg@10": [B], ...}`` from a hit matrix ``[B, width]`` (narrower than ``max(ks)``:
    a catalogue or candidate list shorter than K, whose missing ranks are misses)."""
    hits = hits.float()
    if hits.shape[1] < max(ks):
        hits = torch.nn.functional.pad(hits, (0, max(ks) - hits.shape[1]))
    n_targets = n_targets.clamp(min=1).to(hits.dtype)
    max_k = hits.shape[1]
    discounts = 1.0 / torch.log2(torch.arange(2, max_k + 2, device=hits.device, dtype=hits.dtype))
    ideal = torch.cumsum(discounts, 0)
    out = {}
    for k in ks:
        top = hits[:, :k]
        n_hits = top.sum(1)
        first = top.argmax(1)
        out[f"hr@{k}"] = (n_hits > 0).to(hits.dtype)
        out[f"ndcg@{k}"] = (top * discounts[:k]).sum(1) / ideal[(n_targets.clamp(max=k) - 1).long()]
        out[f"mrr@{k}"] = torch.where(n_hits > 0, 1.0 / (first + 1).to(hits.dtype), torch.zeros_like(n_hits))
        out[f"recall@{k}"] = n_hits / n_targets
        out[f"precision@{k}"] = n_hits / k
    return out


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores per row (ties broken by ``torch.topk``)."""
    return torch.topk(scores, k=min(k, scores.shape[1]), dim=1).indices


def self_information(counts: torch.Tensor) -> torch.Tensor:
    """``-log2 p(i)`` per item from training counts ``[n_items + 1]`` (unseen items count once; Zhou et al. 2010)."""
    counts = counts.double()
    total = counts[1:].sum().clamp(min=1)
    return -torch.log2(counts.clamp(min=1) / total)


def list_metrics(
    ranked: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, ks: list[int] | tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-user novelty@K and ARP@K of top-K lists ``ranked [B, width]``.

    ``valid [B, width]`` marks real recommendations (a list can hold fewer than K items when the
    catalogue minus the masked history is shorter); ``counts`` are the items' training counts.
    """
    counts = counts.to(ranked.device)
    listed = valid.float()
    # running sums along each list: the value @K is column K - 1, for every K at once
    length = torch.cumsum(listed, 1).clamp(min=1)
    information = torch.cumsum(self_information(counts).float()[ranked] * listed, 1) / length
    popularity = torch.cumsum(counts.float()[ranked] * listed, 1) / length
    out = {}
    for k in ks:
        column = min(k, ranked.shape[1]) - 1
        out[f"novelty@{k}"] = information[:, column]
        out[f"arp@{k}"] = popularity[:, column]
    return out


def recommended_items(
    ranked: torch.Tensor, valid: torch.Tensor, n_items: int, ks: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """``[len(ks), n_items + 1]`` bool: which items appear in any of these users' top-K lists.

    OR-ing these masks over batches (and processes) and counting gives catalogue coverage@K.
    """
    mask = torch.zeros(len(ks), n_items + 1, dtype=torch.bool, device=ranked.device)
    for row, k in enumerate(ks):
        mask[row, ranked[:, :k][valid[:, :k]]] = True
    mask[:, 0] = False
    return mask
