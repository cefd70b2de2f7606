"""Classification and rating metrics against scikit-learn, hand-computed OOS values, and the PNG writer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from recsys_cli.errors import RecsysError
from recsys_cli.evaluation.classification import (
    classification_metrics,
    confusion_matrix,
    per_class_report,
    regression_metrics,
    report_rows,
    save_confusion_png,
    topk_accuracy,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_rng = np.random.default_rng(0)

# (labels, predictions, n_classes): each case stresses a different part of the label-set rules.
CASES = {
    "class_never_predicted": ([0, 1, 2, 3, 3, 1, 0, 2], [0, 1, 2, 2, 0, 1, 1, 2], 4),
    "class_only_predicted": ([0, 0, 1, 1, 2, 2], [0, 4, 1, 4, 2, 0], 5),
    "single_class": ([2, 2, 2, 2], [2, 2, 2, 2], 6),
    "single_class_all_wrong": ([1, 1, 1], [0, 0, 0], 3),
    "swapped_zero_division": ([0, 0, 1, 1], [1, 1, 0, 0], 2),
    "many_absent_classes": ([7, 7, 3, 3, 3, 9], [7, 3, 3, 3, 9, 0], 12),
    "random": (_rng.integers(0, 9, 300), _rng.integers(0, 10, 300), 10),
}


@pytest.mark.parametrize("case", CASES)
def test_classification_metrics_match_sklearn(case):
    labels, predictions, n_classes = (np.asarray(v) if i < 2 else v for i, v in enumerate(CASES[case]))
    got = classification_metrics(labels, predictions, n_classes)
    expected = {
        "accuracy": sk.accuracy_score(labels, predictions),
        "macro_f1": sk.f1_score(labels, predictions, average="macro", zero_division=0),
        "macro_precision": sk.precision_score(labels, predictions, average="macro", zero_division=0),
        "macro_recall": sk.recall_score(labels, predictions, average="macro", zero_division=0),
        "weighted_f1": sk.f1_score(labels, predictions, average="weighted", zero_division=0),
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert all(type(value) is float for value in got.values())


@pytest.mark.parametrize("case", CASES)
def test_per_class_report_matches_sklearn(case):
    labels, predictions, n_classes = CASES[case]
    names = [f"intent_{i}" for i in range(n_classes)]
    report = per_class_report(labels, predictions, names)
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        labels, predictions, labels=list(range(n_classes)), zero_division=0
    )
    assert [row["name"] for row in report] == names
    np.testing.assert_allclose([row["precision"] for row in report], precision, atol=1e-12)
    np.testing.assert_allclose([row["recall"] for row in report], recall, atol=1e-12)
    np.testing.assert_allclose([row["f1"] for row in report], f1, atol=1e-12)
    assert [row["support"] for row in report] == support.tolist()
    assert [row["predicted"] for row in report] == np.bincount(predictions, minlength=n_classes).tolist()


@pytest.mark.parametrize("case", CASES)
def test_confusion_matrix_matches_sklearn_for_numpy_and_torch(case):
    labels, predictions, n_classes = CASES[case]
    expected = sk.confusion_matrix(labels, predictions, labels=list(range(n_classes)))
    from_numpy = confusion_matrix(np.asarray(labels), np.asarray(predictions), n_classes)
    from_torch = confusion_matrix(torch.as_tensor(labels), torch.as_tensor(predictions), n_classes)
    assert from_numpy.dtype == np.int64 and from_numpy.shape == (n_classes, n_classes)
    np.testing.assert_array_equal(from_numpy, expected)
    np.testing.assert_array_equal(from_torch, expected)


def test_torch_float_labels_are_accepted_and_fractional_ones_rejected():
    labels = torch.tensor([0.0, 1.0, 2.0])  # the evaluator gathers labels as floats
    assert confusion_matrix(labels, torch.tensor([0, 1, 1]), 3).trace() == 2
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.array([0.5, 1.0]), np.array([0, 1]), 3)


def test_out_of_range_ids_and_mismatched_lengths_are_reported():
    with pytest.raises(RecsysError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(RecsysError, match="-1"):
        confusion_matrix([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match="length"):
        classification_metrics([0, 1, 2], [0, 1], 3)
    with pytest.raises(RecsysError, match="empty"):
        classification_metrics([], [], 3)
    with pytest.raises(RecsysError, match="oos_label"):
        classification_metrics([0, 1], [0, 1], 3, oos_label=3)


def test_oos_metrics_match_hand_computation_with_prefix():
    # CLINC150-style: class 3 is out-of-scope.
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 3, 3, 3])
    predictions = np.array([0, 3, 1, 1, 0, 3, 3, 0, 3, 2])
    got = classification_metrics(labels, predictions, 4, oos_label=3, prefix="test/")
    # in-scope rows 0-4: rows 0, 2, 3 right; row 1 predicted out-of-scope counts as wrong
    assert got["test/in_scope_accuracy"] == pytest.approx(3 / 5)
    assert got["test/oos_recall"] == pytest.approx(3 / 5)  # rows 5, 6, 8 of the five OOS rows
    assert got["test/oos_precision"] == pytest.approx(3 / 4)  # rows 1, 5, 6, 8 predicted OOS
    assert got["test/accuracy"] == pytest.approx(6 / 10)
    assert all(key.startswith("test/") for key in got)
    assert "oos_recall" not in classification_metrics(labels, predictions, 4)


def test_oos_metrics_are_zero_where_undefined():
    no_oos_rows = classification_metrics([0, 1, 1], [0, 1, 2], 3, oos_label=2)
    assert no_oos_rows["oos_recall"] == 0.0 and no_oos_rows["oos_precision"] == 0.0
    assert no_oos_rows["in_scope_accuracy"] == pytest.approx(2 / 3)
    only_oos_rows = classification_metrics([2, 2], [2, 0], 3, oos_label=2)
    assert only_oos_rows["in_scope_accuracy"] == 0.0
    assert only_oos_rows["oos_recall"] == 0.5 and only_oos_rows["oos_precision"] == 1.0


@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_accuracy_matches_sklearn_without_ties(k):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 8))
    labels = rng.integers(0, 8, 200)
    expected = sk.top_k_accuracy_score(labels, logits, k=k, labels=list(range(8)))
    assert topk_accuracy(labels, logits, k) == pytest.approx(expected)
    assert topk_accuracy(torch.as_tensor(labels), torch.as_tensor(logits, dtype=torch.bfloat16), k) == pytest.approx(
        sk.top_k_accuracy_score(labels, torch.as_tensor(logits, dtype=torch.bfloat16).float().numpy(), k=k)
    )
    if k == 1:
        assert topk_accuracy(labels, logits, 1) == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_topk_accuracy_breaks_ties_like_argmax():
    constant = np.zeros((4, 5))  # an untrained model: every class ties
    labels = np.array([0, 1, 3, 4])
    assert topk_accuracy(labels, constant, 1) == pytest.approx(0.25)  # argmax picks class 0
    assert topk_accuracy(labels, constant, 2) == pytest.approx(0.5)  # classes 0 and 1
    assert topk_accuracy(labels, constant, 5) == 1.0
    assert topk_accuracy(labels, constant, 50) == 1.0
    with pytest.raises(RecsysError, match="k >= 1"):
        topk_accuracy(labels, constant, 0)


def _sklearn_stars(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 1, 5)  # round half up, then clip to the star range


def test_regression_metrics_match_numpy_and_sklearn():
    targets = np.array([1, 2, 3, 4, 5, 5, 4, 3, 1, 2], dtype=np.float64)
    # out-of-range values, exact halves and a class (2) that is never predicted
    predictions = np.array([0.2, 1.49, 3.5, 4.4, 6.3, 4.6, 3.5, 2.51, 1.1, 3.0])
    got = regression_metrics(torch.as_tensor(targets, dtype=torch.float32), torch.as_tensor(predictions), prefix="val/")
    stars_true, stars_pred = targets, _sklearn_stars(predictions)
    assert got["val/rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(targets, predictions)))
    assert got["val/mae"] == pytest.approx(sk.mean_absolute_error(targets, predictions))
    assert got["val/class_accuracy"] == pytest.approx(sk.accuracy_score(stars_true, stars_pred))
    assert got["val/class_macro_f1"] == pytest.approx(sk.f1_score(stars_true, stars_pred, average="macro"))
    assert set(got) == {"val/rmse", "val/mae", "val/class_accuracy", "val/class_macro_f1"}


def test_regression_metrics_on_a_half_star_grid_and_a_single_class():
    classes = (0.5, 1.0, 1.5, 2.0)
    targets = np.array([0.5, 1.0, 1.5, 2.0, 2.0])
    predictions = np.array([0.7, 1.3, 1.2, 2.9, 1.74])  # nearest: 0.5, 1.5, 1.0, 2.0, 1.5
    got = regression_metrics(targets, predictions, classes=classes)
    snapped = np.array([0.5, 1.5, 1.0, 2.0, 1.5])
    assert got["class_accuracy"] == pytest.approx(sk.accuracy_score(targets * 2, snapped * 2))
    assert got["class_macro_f1"] == pytest.approx(sk.f1_score(targets * 2, snapped * 2, average="macro"))
    single = regression_metrics(np.full(3, 5.0), np.array([4.8, 5.4, 4.5]))
    assert single["class_accuracy"] == 1.0 and single["class_macro_f1"] == 1.0
    assert single["mae"] == pytest.approx((0.2 + 0.4 + 0.5) / 3)
    with pytest.raises(RecsysError, match="classes"):
        regression_metrics([1.0], [1.0], classes=())


def test_report_rows_put_the_worst_evaluated_classes_first():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predictions = [0, 0, 1, 1, 1, 2, 2, 4, 4]  # class 3 absent everywhere, class 4 only predicted
    report = per_class_report(labels, predictions, ["a", "b", "c", "d", "e"])
    rows = report_rows(report)
    assert [row["name"] for row in rows] == ["e", "c", "a", "b"]  # f1 0, 2/3, then 0.8 with support 3 before 2
    by_precision = report_rows(report, sort_by="precision")  # 0, 2/3, then 1.0 with support 4 before 3
    assert [row["name"] for row in by_precision] == ["e", "b", "c", "a"]
    assert [row["name"] for row in report_rows(report, limit=2)] == ["e", "c"]
    assert report_rows(report, sort_by="support")[0]["name"] == "e"
    with pytest.raises(RecsysError, match="sort"):
        report_rows(report, sort_by="accuracy")


@pytest.mark.parametrize("n_classes", [5, 100])
def test_save_confusion_png_writes_a_png_atomically(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, 20 * n_classes)
    predictions = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, n_classes, labels.size))
    names = [f"class_{i}_with_a_rather_long_descriptive_name" for i in range(n_classes)]
    target = tmp_path / "reports" / "test_confusion.png"
    written = save_confusion_png(confusion_matrix(labels, predictions, n_classes), names, target)
    assert written == target
    assert target.stat().st_size > 0
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind


def test_save_confusion_png_rejects_a_mismatched_label_list(tmp_path):
    with pytest.raises(ValueError, match="label names"):
        save_confusion_png(np.zeros((3, 3), dtype=np.int64), ["a", "b"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
