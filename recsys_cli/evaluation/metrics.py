"""Top-K ranking metrics on tensors, one value per user, no Python loop over users or items.

Inputs are the ranked item indices ``topk [B, K]`` and the held-out targets ``targets [B, T]``
(0 = padding, so a user may have several relevant items, as in a temporal split). Definitions follow
the usual full-ranking conventions (e.g. RecBole's and Krichene & Rendle 2020):

- HR@K: 1 if any target is in the top K.
- Precision@K: hits in the top K divided by K.  Recall@K: hits divided by the number of targets.
- NDCG@K (Järvelin & Kekäläinen 2002): DCG with gain 1 and discount 1/log2(rank + 1), divided by the
  ideal DCG of min(#targets, K) hits.
- MRR@K: 1 / rank of the first hit within the top K, else 0.
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
    """Per-user ``{"ndcg@10": [B], ...}`` from a hit matrix whose width is at least ``max(ks)``."""
    hits = hits.float()
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
