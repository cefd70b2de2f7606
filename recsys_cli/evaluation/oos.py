"""Out-of-scope detection: saying that a query is none of the intents a model knows.

Three ways, reported side by side whenever the data has an out-of-scope label:

- ``class``: the out-of-scope class itself, where training has examples of it (CLINC150's "oos-train"),
  i.e. the plain argmax over every class;
- ``msp``: the maximum softmax probability over the in-scope intents (Hendrycks & Gimpel 2017): a query the
  model is unsure of is out of scope;
- ``energy``: the log-sum-exp of the in-scope logits (Liu et al. 2020, "Energy-based Out-of-distribution
  Detection"), which keeps the logits' scale that softmax divides away.

Each threshold is chosen on the validation split, never test: where validation holds out-of-scope queries,
the threshold that maximises overall accuracy with out-of-scope as one more class (every query counts once:
an in-scope query must be kept and classified right, an out-of-scope one flagged); where it holds none, the
one that keeps 95% of in-scope validation queries (rejects the least confident 5%). The model stores its
thresholds with its weights, so test, ``recsys eval`` and ``recsys predict`` apply the validation's choice.
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("msp", "energy")
KEEP_IN_SCOPE = 0.95  # without out-of-scope validation queries: keep this share of in-scope ones


def in_scope_scores(logits: torch.Tensor, method: str, oos_label: int | None) -> torch.Tensor:
    """``[N]`` confidence that each row is in scope (higher: more so), from the in-scope logits only."""
    logits = logits.float()
    if oos_label is not None:
        logits = torch.cat([logits[:, :oos_label], logits[:, oos_label + 1 :]], dim=1)
    if method == "msp":
        return torch.softmax(logits, dim=1).max(dim=1).values
    if method == "energy":
        return torch.logsumexp(logits, dim=1)
    raise ValueError(f"unknown out-of-scope method {method!r}")


def in_scope_predictions(logits: torch.Tensor, oos_label: int | None) -> torch.Tensor:
    """The argmax over the in-scope classes (the out-of-scope class, which may be untrained, left out)."""
    if oos_label is None:
        return logits.argmax(1)
    masked = logits.float().clone()
    masked[:, oos_label] = float("-inf")
    return masked.argmax(1)


def choose_threshold(scores: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, oos_label: int) -> float:
    """The validation threshold (see the module's docstring); rows scoring below it are out of scope."""
    scores_np = scores.numpy().astype(np.float64)
    is_oos = (labels == oos_label).numpy()
    inside = scores_np[~is_oos]
    if len(inside) == 0:
        return float("-inf")
    if not is_oos.any():
        return float(np.quantile(inside, 1 - KEEP_IN_SCOPE))
    correct = (in_scope_predictions(logits, oos_label) == labels).numpy()[~is_oos]
    candidates = np.unique(scores_np)
    # For threshold t: in-scope accuracy = correct and score >= t; out-of-scope recall = score < t.
    order = np.argsort(inside)
    sorted_inside, correct_sorted = inside[order], correct[order]
    kept_correct = np.concatenate([np.cumsum(correct_sorted[::-1])[::-1], [0]])  # correct with score >= i-th
    first_kept = np.searchsorted(sorted_inside, candidates, side="left")
    accuracy = kept_correct[first_kept] / len(inside)
    flagged = np.searchsorted(np.sort(scores_np[is_oos]), candidates, side="left")
    # Overall accuracy with out-of-scope as one more class (CLINC150's): each query counts once.
    overall = (accuracy * len(inside) + flagged) / len(scores_np)
    return float(candidates[int(np.argmax(overall))])


def flag(logits: torch.Tensor, method: str, threshold: float, oos_label: int | None) -> torch.Tensor:
    """Boolean ``[N]``: rows that ``method`` at ``threshold`` calls out of scope."""
    return in_scope_scores(logits, method, oos_label) < threshold


def predictions_with_rejection(logits: torch.Tensor, method: str, threshold: float, oos_label: int) -> torch.Tensor:
    """In-scope argmax, replaced by ``oos_label`` where the row is flagged out of scope."""
    predicted = in_scope_predictions(logits, oos_label)
    return torch.where(flag(logits, method, threshold, oos_label), torch.full_like(predicted, oos_label), predicted)
