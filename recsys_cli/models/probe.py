"""What an untuned encoder already knows: a linear probe and zero-shot label matching on fixed embeddings.

These are the "before" of fine-tuning (``recsys eval --baselines``). Both read pooled embeddings of the
pretrained encoder, computed once:

- **linear probe**: multinomial logistic regression (classification) or ridge regression (ratings) on
  standardised embeddings, its L2 strength chosen on the validation split only;
- **zero-shot**: each text gets the label whose name ("card_arrival" → "card arrival") has the most
  cosine-similar embedding; no training at all.

Everything is full-batch tensor algebra (L-BFGS, a closed-form ridge solve), seconds on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
RIDGE_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _logistic_regression(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, steps: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def linear_probe_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    n_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 200,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Logistic regression on standardised features; returns ``(logits_of, chosen_l2)``.

    The L2 strength with the best validation accuracy wins (ties: the stronger one).
    """
    train_x, valid_x = train_x.float(), valid_x.float()
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xs, vs = (train_x - mean) / std, (valid_x - mean) / std
    best: tuple[float, float, torch.nn.Linear] | None = None
    for l2 in sorted(l2_grid, reverse=True):
        with torch.enable_grad():
            layer = _logistic_regression(xs, train_y.long(), n_classes, l2, steps)
        with torch.no_grad():
            accuracy = (layer(vs).argmax(1) == valid_y.long()).float().mean().item() if len(vs) else 0.0
        if best is None or accuracy > best[0]:
            best = (accuracy, l2, layer)
    assert best is not None
    _, l2, layer = best

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return layer((x.float() - mean) / std)

    return logits_of, l2


def ridge_regressor(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    alphas: Sequence[float] = RIDGE_GRID,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Ridge regression on standardised features (closed form); alpha chosen by validation RMSE."""
    x = train_x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std
    y = train_y.double()
    y_mean = y.mean()
    gram = xs.T @ xs
    moment = xs.T @ (y - y_mean)
    eye = torch.eye(xs.shape[1], dtype=torch.float64)
    vs = (valid_x.double() - mean) / std
    best: tuple[float, float, torch.Tensor] | None = None
    for alpha in alphas:
        weights = torch.linalg.solve(gram + alpha * eye, moment)
        rmse = ((vs @ weights + y_mean - valid_y.double()) ** 2).mean().sqrt().item() if len(vs) else 0.0
        if best is None or rmse < best[0]:
            best = (rmse, alpha, weights)
    assert best is not None
    _, alpha, weights = best

    def predict(features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - mean) / std @ weights + y_mean).float()

    return predict, alpha


def label_prompt(name: str) -> str:
    """A label id as words: ``card_arrival`` → ``card arrival``, ``getExchangeRate`` → ``get exchange rate``."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name)).replace("_", " ").replace("-", " ")
    return " ".join(words.lower().split())


def zero_shot_scores(text_embeddings: torch.Tensor, label_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every text to every label name ``[texts, labels]``."""
    return F.normalize(text_embeddings.float(), dim=1) @ F.normalize(label_embeddings.float(), dim=1).T
