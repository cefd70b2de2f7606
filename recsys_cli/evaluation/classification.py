"""Metrics and reports for the text models: an intent classifier and a review → star-rating regressor.

Everything is computed from one confusion matrix built with ``np.bincount``, so there is no Python loop
over samples or classes. Per-class precision, recall and F1 follow scikit-learn with
``zero_division=0``, and macro averages run over the classes that occur in the labels *or* the
predictions (scikit-learn's default label set), so the numbers here equal ``sklearn.metrics``' ones.
Out-of-scope metrics follow the CLINC150 protocol of Larson et al. (2019).

Inputs may be numpy arrays or torch tensors; torch is never imported here unless a tensor is passed,
and matplotlib only when a confusion matrix is drawn, so importing this module stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_path

REPORT_FIELDS = ("precision", "recall", "f1", "support", "predicted")

# Confusion-matrix figure: counts are only legible up to this many classes; names are cut to fit.
ANNOTATE_MAX_CLASSES = 30
MAX_NAME_CHARS = 24


def _as_numpy(values: Any) -> np.ndarray:
    """A numpy view of an array, list or (possibly GPU, possibly half-precision) torch tensor."""
    if hasattr(values, "detach"):
        import torch  # already loaded: the caller passed a tensor

        values = values.detach().cpu()
        if values.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def _class_ids(values: Any, n_classes: int, name: str) -> np.ndarray:
    """1-D int64 class ids in ``[0, n_classes)``; float input (labels gathered as floats) must be integral."""
    ids = _as_numpy(values)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        if ids.size and not np.array_equal(ids, np.round(ids)):
            raise ValueError(f"{name} must be integer class ids, got non-integral values of dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
        raise RecsysError(
            f"{name} contain class id {int(ids.min() if ids.min() < 0 else ids.max())}, outside [0, {n_classes}); "
            "the label map does not cover the data: pass every label name (or re-run preprocessing)"
        )
    return ids


def _pair(labels: Any, predictions: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if n_classes < 1:
        raise RecsysError(f"n_classes is {n_classes}; a classifier needs at least one class (check the label map)")
    true = _class_ids(labels, n_classes, "labels")
    predicted = _class_ids(predictions, n_classes, "predictions")
    if true.shape != predicted.shape:
        raise ValueError(f"labels and predictions differ in length: {true.shape[0]} vs {predicted.shape[0]}")
    return true, predicted


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio that is 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, support and prediction counts of a confusion matrix."""
    true_positives = np.diag(matrix)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    return {
        "precision": _divide(true_positives, predicted),
        "recall": _divide(true_positives, support),
        # 2TP / (2TP + FP + FN), the form scikit-learn uses, so values agree to the last bit
        "f1": _divide(2 * true_positives, support + predicted),
        "support": support,
        "predicted": predicted,
    }


def _averages(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy and macro/weighted averages over the classes present in labels or predictions."""
    stats = _per_class(matrix)
    present = (stats["support"] > 0) | (stats["predicted"] > 0)
    total = matrix.sum()

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return {
        "accuracy": float(_divide(np.trace(matrix), total)),
        "macro_f1": macro(stats["f1"]),
        "macro_precision": macro(stats["precision"]),
        "macro_recall": macro(stats["recall"]),
        "weighted_f1": float(_divide((stats["f1"] * stats["support"]).sum(), total)),
    }


def confusion_matrix(labels: Any, predictions: Any, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` int64 counts; rows are true classes, columns predicted classes."""
    true, predicted = _pair(labels, predictions, n_classes)
    counts = np.bincount(true * n_classes + predicted, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64, copy=False)


def per_class_report(labels: Any, predictions: Any, label_names: list[str]) -> list[dict]:
    """One JSON-ready dict per class: ``name, precision, recall, f1, support, predicted``.

    Undefined ratios are 0, as in scikit-learn with ``zero_division=0``. ``predicted`` (how often the
    class was predicted) lets a reader tell a class that was never seen from one that only gathered
    false positives.
    """
    matrix = confusion_matrix(labels, predictions, len(label_names))
    stats = _per_class(matrix)
    return [
        {
            "name": str(name),
            "precision": float(stats["precision"][index]),
            "recall": float(stats["recall"][index]),
            "f1": float(stats["f1"][index]),
            "support": int(stats["support"][index]),
            "predicted": int(stats["predicted"][index]),
        }
        for index, name in enumerate(label_names)
    ]


def classification_metrics(
    labels: Any, predictions: Any, n_classes: int, oos_label: int | None = None, prefix: str = ""
) -> dict[str, float]:
    """Accuracy, macro/weighted F1, macro precision/recall, and out-of-scope metrics when ``oos_label`` is set.

    Keys are ``f"{prefix}{name}"`` (``prefix="test/"`` gives ``test/accuracy``).
    """
    matrix = confusion_matrix(labels, predictions, n_classes)
    if matrix.sum() == 0:
        raise RecsysError("no rows to evaluate: the split is empty; check the data split sizes")
    metrics = _averages(matrix)
    if oos_label is not None:
        if not 0 <= oos_label < n_classes:
            raise RecsysError(f"oos_label {oos_label} is outside [0, {n_classes}); set it to the out-of-scope class id")
        # Out-of-scope evaluation of Larson et al. (2019), "An Evaluation Dataset for Intent Classification
        # and Out-of-Scope Prediction" (CLINC150): in-scope accuracy counts an in-scope query predicted as
        # out-of-scope as an error; OOS recall is the share of out-of-scope queries that were flagged.
        in_scope = np.ones(n_classes, dtype=bool)
        in_scope[oos_label] = False
        oos_hits = matrix[oos_label, oos_label]
        metrics["in_scope_accuracy"] = float(_divide(np.diag(matrix)[in_scope].sum(), matrix[in_scope].sum()))
        metrics["oos_recall"] = float(_divide(oos_hits, matrix[oos_label].sum()))
        metrics["oos_precision"] = float(_divide(oos_hits, matrix[:, oos_label].sum()))
    return {f"{prefix}{name}": value for name, value in metrics.items()}


def topk_accuracy(labels: Any, logits: Any, k: int) -> float:
    """Share of rows whose true class is among the ``k`` highest logits.

    Ties are broken towards the lower class id, as ``argmax`` does, so ``k=1`` equals the accuracy of
    ``logits.argmax(1)`` and constant logits (an untrained model) do not count as top-k hits.
    """
    scores = _as_numpy(logits)
    if scores.ndim != 2:
        raise ValueError(f"logits must be [n_rows, n_classes], got shape {scores.shape}")
    if k < 1:
        raise RecsysError(f"top-k accuracy needs k >= 1, got k={k}")
    true = _class_ids(labels, scores.shape[1], "labels")
    if true.shape[0] != scores.shape[0]:
        raise ValueError(f"labels and logits differ in length: {true.shape[0]} vs {scores.shape[0]}")
    if true.size == 0:
        raise RecsysError("no rows to evaluate: the split is empty; check the data split sizes")
    true_scores = np.take_along_axis(scores, true[:, None], axis=1)
    lower_id = np.arange(scores.shape[1])[None, :] < true[:, None]
    # rank of the true class = number of classes placed before it
    rank = ((scores > true_scores) | ((scores == true_scores) & lower_id)).sum(1)
    return float((rank < k).mean())


def _nearest_class(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of the nearest class value; halfway values go up (3.5 stars → 4), outside values clip."""
    midpoints = (classes[1:] + classes[:-1]) / 2
    return np.searchsorted(midpoints, values, side="right")


def regression_metrics(
    targets: Any, predictions: Any, classes: tuple[float, ...] = (1, 2, 3, 4, 5), prefix: str = ""
) -> dict[str, float]:
    """RMSE and MAE, plus accuracy and macro-F1 after snapping predictions to the nearest class value.

    Rounding to the class grid (and clipping to its ends) turns a rating regressor into a star
    classifier, comparable with a classifier trained on the same stars. Targets are snapped too, so
    stars stored as floats (``4.0000001``) compare equal. Macro-F1 is scikit-learn's
    ``f1_score(average="macro")`` on the snapped values.
    """
    true = _as_numpy(targets).astype(np.float64).reshape(-1)
    predicted = _as_numpy(predictions).astype(np.float64).reshape(-1)
    if true.shape != predicted.shape:
        raise ValueError(f"targets and predictions differ in length: {true.shape[0]} vs {predicted.shape[0]}")
    if true.size == 0:
        raise RecsysError("no rows to evaluate: the split is empty; check the data split sizes")
    grid = np.unique(np.asarray(classes, dtype=np.float64))
    if grid.size == 0:
        raise RecsysError("regression classes are empty; pass the rating values, e.g. classes=(1, 2, 3, 4, 5)")
    errors = predicted - true
    matrix = confusion_matrix(_nearest_class(true, grid), _nearest_class(predicted, grid), grid.size)
    averages = _averages(matrix)
    metrics = {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "class_accuracy": averages["accuracy"],
        "class_macro_f1": averages["macro_f1"],
    }
    return {f"{prefix}{name}": value for name, value in metrics.items()}


def _short_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def save_confusion_png(matrix: np.ndarray, label_names: list[str], path: str | os.PathLike) -> Path:
    """Draw a row-normalised confusion matrix to ``path`` (PNG, written atomically) and return the path.

    Colours show the share of each true class predicted as each class, so rare classes are as visible
    as frequent ones; raw counts are written in the cells when there are at most 30 classes.
    """
    # The object-oriented API with an explicit Agg canvas: no pyplot, so no global backend switch or
    # figure registry, and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    n_classes = len(label_names)
    if counts.shape != (n_classes, n_classes) or n_classes == 0:
        raise ValueError(f"matrix of shape {counts.shape} does not match {n_classes} label names")
    shares = _divide(counts, counts.sum(1, keepdims=True))

    # Fonts shrink from 10 pt to 6 pt as classes grow past 40, and the resolution rises so small text
    # stays legible when zoomed; each cell stays one text line high so 100+ tick labels never overlap.
    font_size = float(np.clip(400 / n_classes, 6, 10))
    cell_inches = max(font_size * 1.5 / 72, min(0.6, 6 / n_classes))
    side = n_classes * cell_inches
    # Margins are sized from the longest (truncated) name rather than by a layout engine, which would
    # draw the figure an extra time (a second per 100 classes).
    label_inches = font_size * 0.62 / 72 * min(MAX_NAME_CHARS, max(len(str(name)) for name in label_names))
    rotation = 90 if n_classes > 10 else 45  # 45° reads better but only fits a few classes
    left, right, top = label_inches + 0.55, 1.2, 0.2
    bottom = label_inches * (1.0 if rotation == 90 else 0.75) + 0.55
    width, height = left + side + right, bottom + side + top
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((left / width, bottom / height, side / width, side / height))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar_axes = figure.add_axes(((left + side + 0.15) / width, bottom / height, 0.2 / width, side / height))
    colorbar = figure.colorbar(image, cax=colorbar_axes)
    colorbar.set_label("share of the true class")

    ticks = np.arange(n_classes)
    names = [_short_name(str(name)) for name in label_names]
    axes.set_xticks(ticks, names, rotation=rotation, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, names)
    axes.tick_params(labelsize=font_size, length=2 if n_classes > 30 else 3.5)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")

    if n_classes <= ANNOTATE_MAX_CLASSES:
        # Only non-zero cells: a grid of zeros hides the few errors that matter.
        for row, col in zip(*np.nonzero(counts)):
            colour = "white" if shares[row, col] > 0.5 else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", fontsize=font_size, color=colour)

    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=150 if n_classes > ANNOTATE_MAX_CLASSES else 120)
    return target


def report_rows(report: list[dict], limit: int | None = None, sort_by: str = "f1") -> list[dict]:
    """Rows of a per-class report for a table, worst first (lowest ``sort_by``, then most support).

    Classes that are neither in the labels nor predicted are left out: they were not evaluated, and
    the macro averages leave them out too.
    """
    if sort_by not in REPORT_FIELDS:
        raise RecsysError(f"cannot sort the per-class report by {sort_by!r}; choose one of {', '.join(REPORT_FIELDS)}")
    if limit is not None and limit < 0:
        raise RecsysError(f"the row limit must be >= 0, got {limit}")
    evaluated = [row for row in report if row.get("support", 0) > 0 or row.get("predicted", 0) > 0]
    # Ties (often many classes at F1 = 1.0 or 0.0) go to the class with more support: its errors weigh more.
    ranked = sorted(evaluated, key=lambda row: (row[sort_by], -row.get("support", 0), row["name"]))
    return [dict(row) for row in ranked[:limit]]
