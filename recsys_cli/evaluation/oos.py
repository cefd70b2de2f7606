"""Out-of-scope detection: saying that a query is none of the intents a model knows.

Five ways, reported side by side whenever the data has an out-of-scope label (``model.oos_method=auto``, the
default, marks texts in predict by the one with the best overall accuracy on validation):

- ``class``: the out-of-scope class itself, where training has examples of it (CLINC150's "oos-train"),
  i.e. the plain argmax over every class;
- ``msp``: the maximum softmax probability over the in-scope intents (Hendrycks & Gimpel 2017): a query the
  model is unsure of is out of scope;
- ``energy``: the log-sum-exp of the in-scope logits (Liu et al. 2020, "Energy-based Out-of-distribution
  Detection"), which keeps the logits' scale that softmax divides away;
- ``mahalanobis``: minus the Mahalanobis distance of the text's pooled embedding to the nearest in-scope
  class mean, with one covariance shared by all classes, both fitted on the training texts (Lee et al. 2018;
  Podolskiy et al. 2021, "Revisiting Mahalanobis Distance for Transformer-Based Out-of-Domain Detection");
- ``knn``: the cosine similarity of the text's pooled embedding to its nearest in-scope training text (Sun et
  al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors", with k = 1: on BANKING77-OOS with
  the frozen packaged MiniLM, validation's overall accuracy was 0.816 at k = 1, 0.805 at 3, 0.797 at 5, 0.786
  at 10). The two look at the encoder's space, not at the head, so they see a query that lies far from every
  intent's training texts even where the head is confident.

Each threshold is chosen on the validation split, never test: where validation holds out-of-scope queries,
the threshold that maximises overall accuracy with out-of-scope as one more class (every query counts once:
an in-scope query must be kept and classified right, an out-of-scope one flagged); where it holds none, the
one that keeps 95% of in-scope validation queries (rejects the least confident 5%). The model stores its
thresholds (and the embedding space's statistics: class means, precision, the training texts' normalised
embeddings) with its weights, so test, ``recsys eval`` and ``recsys predict`` apply the validation's choice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

METHODS = ("msp", "energy", "mahalanobis", "knn")
RULES = ("class", *METHODS)  # what predict can mark out-of-scope texts by (model.oos_method=auto: validation's best)
SPACE_METHODS = ("mahalanobis", "knn")  # the methods that need the embeddings and the fitted training space
KEEP_IN_SCOPE = 0.95  # without out-of-scope validation queries: keep this share of in-scope ones
SHRINKAGE = 1e-3  # ridge on the shared covariance, relative to its mean variance: keeps it invertible
MAX_BANK = 50_000  # training texts kept for knn (a seeded sample beyond): 38 MB at 384 dimensions in float16


class TrainingSpace(NamedTuple):
    """What the embedding-space methods know of the training texts: class means ``[C, H]`` (nan rows: classes
    without training texts, and the out-of-scope class), the precision ``[H, H]`` (inverse of the covariance
    shared by all classes), and the in-scope training texts' L2-normalised embeddings ``[N, H]`` (the bank)."""

    means: torch.Tensor
    precision: torch.Tensor
    bank: torch.Tensor

    def as_float(self) -> TrainingSpace:
        """The same in float32 (the bank is stored in float16): convert once before scoring many batches."""
        return TrainingSpace(*(values.float() for values in self))

    def fitted(self, method: str) -> bool:
        if method == "knn":
            return len(self.bank) > 0 and bool(torch.isfinite(self.bank[:1]).all())
        return bool(torch.isfinite(self.precision).all() and torch.isfinite(self.means).all(1).any())


def fit_training_space(
    embeddings: torch.Tensor, labels: torch.Tensor, n_labels: int, oos_label: int | None, seed: int = 0
) -> TrainingSpace:
    """Class means, the shared precision and the knn bank from training embeddings ``[N, H]`` with labels ``[N]``."""
    labels = labels.long()
    keep = labels != oos_label if oos_label is not None else torch.ones_like(labels, dtype=torch.bool)
    embeddings, labels = embeddings[keep], labels[keep]
    with torch.autocast(embeddings.device.type, enabled=False):  # float64 throughout, never bf16 matmuls
        z = embeddings.double()
        counts = torch.bincount(labels, minlength=n_labels).double()
        sums = torch.zeros(n_labels, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, labels, z)
        means = sums / counts.clamp(min=1)[:, None]
        centred = z - means[labels]
        covariance = centred.T @ centred / max(1, len(z))
        ridge = SHRINKAGE * covariance.diagonal().mean().clamp(min=1e-12)
        eye = torch.eye(len(covariance), dtype=torch.float64, device=z.device)
        precision = torch.linalg.inv(covariance + ridge * eye)
    means[counts == 0] = float("nan")
    bank = embeddings
    if len(bank) > MAX_BANK:
        generator = torch.Generator().manual_seed(seed)
        bank = bank[torch.randperm(len(bank), generator=generator)[:MAX_BANK].to(bank.device)]
    bank = torch.nn.functional.normalize(bank.float(), dim=1).half()
    return TrainingSpace(means.float(), precision.float(), bank)


def mahalanobis_scores(embeddings: torch.Tensor, space: TrainingSpace) -> torch.Tensor:
    """``[N]`` minus the squared Mahalanobis distance to the nearest class mean (higher: more in scope)."""
    known = torch.isfinite(space.means).all(1)
    with torch.autocast(embeddings.device.type, enabled=False):  # a difference of large terms: never in bf16
        z = embeddings.double()
        means, precision = space.means[known].double(), space.precision.double()
        # (z - m) P (z - m)^T for every pair, expanded into three matmuls: never an [N, C, H] tensor.
        zp = z @ precision
        distances = (zp * z).sum(1, keepdim=True) - 2 * zp @ means.T + ((means @ precision) * means).sum(1)[None, :]
        return -distances.min(dim=1).values.float()


def knn_scores(embeddings: torch.Tensor, space: TrainingSpace, chunk: int = 1024) -> torch.Tensor:
    """``[N]`` cosine similarity to the nearest training text (higher: more in scope), in row chunks."""
    return nearest_cosine(embeddings, space.bank, chunk)


def nearest_cosine(embeddings: torch.Tensor, bank: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[N]`` cosine similarity of each row to its nearest row of ``bank`` (unit rows), in row chunks."""
    bank = bank.float()
    with torch.autocast(embeddings.device.type, enabled=False):
        z = torch.nn.functional.normalize(embeddings.float(), dim=1)
        return torch.cat([(part @ bank.T).max(dim=1).values for part in z.split(chunk)]) if len(z) else z[:, 0]


# Queries like the recommender's training queries: the similarity floor is this quantile of a training query's
# similarity to its nearest other training query (95% of in-domain queries lie above it), over a sample of them.
LIKE_TRAINING_QUANTILE = 0.05
LIKE_TRAINING_SAMPLE = 2000


def near_training(
    embeddings: torch.Tensor, training: torch.Tensor, floor: float | None = None
) -> tuple[torch.Tensor, float]:
    """Which rows of ``embeddings`` lie at least ``floor`` (cosine) from their nearest row of ``training`` (both
    raw embeddings), and the floor (None: :func:`training_query_floor` of ``training``)."""
    bank = torch.nn.functional.normalize(training.float(), dim=1)
    floor = training_query_floor(bank) if floor is None else floor
    if len(bank) == 0:
        return torch.zeros(len(embeddings), dtype=torch.bool), floor
    return nearest_cosine(embeddings, bank) >= floor, floor


def training_query_floor(bank: torch.Tensor, sample: int = LIKE_TRAINING_SAMPLE, seed: int = 0) -> float:
    """The cosine similarity above which a query counts as like the training queries ``bank`` (unit rows):
    the :data:`LIKE_TRAINING_QUANTILE` quantile of a sampled training query's similarity to its nearest
    other one (-1 with fewer than two: nothing counts as unlike)."""
    if len(bank) < 2:
        return -1.0
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(bank), generator=generator)[:sample]
    similarity = bank[rows].float() @ bank.float().T
    similarity[torch.arange(len(rows)), rows] = -torch.inf  # not itself
    return float(torch.quantile(similarity.max(dim=1).values, LIKE_TRAINING_QUANTILE))


def in_scope_scores(
    logits: torch.Tensor,
    method: str,
    oos_label: int | None,
    embeddings: torch.Tensor | None = None,
    space: TrainingSpace | None = None,
) -> torch.Tensor:
    """``[N]`` confidence that each row is in scope (higher: more so), from the in-scope logits only, or for
    the embedding-space methods from the pooled ``embeddings`` and the training texts' ``space``."""
    if method in SPACE_METHODS:
        if embeddings is None or space is None:
            raise ValueError(f"the {method} method needs the texts' embeddings and the fitted training space")
        return mahalanobis_scores(embeddings, space) if method == "mahalanobis" else knn_scores(embeddings, space)
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


def flag(
    logits: torch.Tensor,
    method: str,
    threshold: float,
    oos_label: int | None,
    embeddings: torch.Tensor | None = None,
    space: TrainingSpace | None = None,
) -> torch.Tensor:
    """Boolean ``[N]``: rows that ``method`` (any rule of :data:`RULES`) at ``threshold`` calls out of scope;
    ``class``: the rows whose argmax is the out-of-scope class (no threshold)."""
    if method == "class":
        return logits.argmax(1) == oos_label
    return in_scope_scores(logits, method, oos_label, embeddings, space) < threshold


def predictions_with_rejection(
    logits: torch.Tensor,
    method: str,
    threshold: float,
    oos_label: int,
    embeddings: torch.Tensor | None = None,
    space: TrainingSpace | None = None,
) -> torch.Tensor:
    """In-scope argmax, replaced by ``oos_label`` where the row is flagged out of scope."""
    predicted = in_scope_predictions(logits, oos_label)
    flagged = flag(logits, method, threshold, oos_label, embeddings, space)
    return torch.where(flagged, torch.full_like(predicted, oos_label), predicted)


def out_of_scope_rule(model: Any, oos_label: int | None) -> tuple[str | None, float]:
    """How predict marks out-of-scope texts: the model's ``oos_method`` with its validation threshold (``auto``:
    the usable rule with the best overall validation accuracy), or the out-of-scope class where that method has
    no threshold (None: the data had no out-of-scope label)."""
    if oos_label is None:
        return None, float("nan")
    thresholds = getattr(model, "oos_thresholds", None)
    if thresholds is None:
        return "class", float("nan")

    def usable(rule: str) -> bool:
        if rule == "class":
            return True
        if not np.isfinite(float(thresholds[METHODS.index(rule)])):
            return False
        return rule not in SPACE_METHODS or model.training_space().fitted(rule)

    method = getattr(model, "oos_method", "class")
    if method == "auto":
        accuracy = getattr(model, "oos_validation_accuracy", None)
        accuracy = [float("nan")] * len(RULES) if accuracy is None else accuracy.tolist()
        ranked = [(accuracy[i], -i, rule) for i, rule in enumerate(RULES) if usable(rule)]
        ranked = [entry for entry in ranked if np.isfinite(entry[0])]
        # the most accurate on validation (ties: the simpler rule); without out-of-scope validation texts, msp
        method = max(ranked)[2] if ranked else ("msp" if usable("msp") else "class")
    if method == "class" or not usable(method):
        return "class", float("nan")
    return method, float(thresholds[METHODS.index(method)])
