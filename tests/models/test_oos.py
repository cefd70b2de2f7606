"""Out-of-scope detection: thresholds chosen on validation, intents held out as unknown, predict marks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.data.text import TableTextSource, prepare_text, prepare_text_data
from recsys_cli.errors import RecsysError
from recsys_cli.evaluation import oos
from tests.conftest import TINY_TEXT

runner = CliRunner()


def test_the_threshold_balances_in_scope_accuracy_and_out_of_scope_recall():
    # 3 classes, class 2 is out of scope. Confident in-scope rows (one wrong), unsure out-of-scope rows.
    logits = torch.tensor([[5.0, 0, 0], [4.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0], [0.2, 0, 0], [0, 0.3, 0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = oos.in_scope_scores(logits, "msp", oos_label=2)
    threshold = oos.choose_threshold(scores, logits, labels, oos_label=2)
    flagged = oos.flag(logits, "msp", threshold, 2)
    assert flagged.tolist() == [False, False, False, False, True, True]  # every out-of-scope row, no in-scope one
    predicted = oos.predictions_with_rejection(logits, "msp", threshold, 2)
    assert predicted.tolist() == [0, 0, 1, 0, 2, 2]
    # without out-of-scope rows in validation: keep 95% of in-scope rows
    keep = oos.choose_threshold(scores[:4], logits[:4], labels[:4], oos_label=2)
    assert keep == pytest.approx(float(torch.quantile(scores[:4], 0.05)))
    # the out-of-scope class's own logit never counts as in-scope confidence
    assert oos.in_scope_scores(torch.tensor([[0.0, 0.0, 9.0]]), "energy", 2).item() == pytest.approx(
        torch.logsumexp(torch.zeros(2), 0).item()
    )


def _table(path, per_label: int = 12, labels: int = 8):
    texts = [f"please help with {name} number {i}" for name in "abcdefgh"[:labels] for i in range(per_label)]
    pd.DataFrame({"text": texts, "label": [t.split()[3] for t in texts]}).to_csv(path, index=False)
    return path


def test_a_quarter_of_the_intents_held_out_as_unknown(tmp_path):
    source = TableTextSource(path=str(_table(tmp_path / "t.csv")))
    splits = prepare_text_data(source, valid_ratio=0.25, test_ratio=0.25, seed=3, unknown_labels=0.25)
    assert splits.label_names[-1] == "oos" and splits.oos_label == len(splits.label_names) - 1
    assert len(splits.label_names) == 6 + 1  # 6 known intents and the out-of-scope label
    assert not (splits.train["label"] == splits.oos_label).any()  # never trained on
    for split in (splits.valid, splits.test):
        assert (split["label"] == splits.oos_label).sum() > 0
    assert splits.counts["classes held out as unknown"] == 2
    again = prepare_text_data(source, valid_ratio=0.25, test_ratio=0.25, seed=3, unknown_labels=0.25)
    assert again.label_names == splits.label_names  # seeded
    with pytest.raises(RecsysError, match="unknown_labels"):
        prepare_text_data(source, unknown_labels=1.0)


def test_held_out_intents_are_part_of_the_processed_folders_key(tmp_path):
    # A folder prepared with intents held out must never be reused by a run without them (and back).
    source = TableTextSource(path=str(_table(tmp_path / "t.csv")))
    settings = {"valid_ratio": 0.25, "test_ratio": 0.25, "seed": 3}
    held, reused = prepare_text("t", source, tmp_path / "data", unknown_labels=0.25, **settings)
    assert not reused and held.oos_label is not None
    plain, reused = prepare_text("t", source, tmp_path / "data", **settings)
    assert not reused and plain.oos_label is None and "oos" not in plain.label_names
    assert len(plain.label_names) == 8 and len(plain.train) > len(held.train)
    again, reused = prepare_text("t", source, tmp_path / "data", unknown_labels=0.25, **settings)
    assert reused and again.label_names == held.label_names


def test_thresholds_travel_in_the_checkpoint_and_predict_marks_out_of_scope(tiny_encoder, workdir, tmp_path):
    args = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none"]
    args += ["data.text.unknown_labels=0.25", "trainer.max_epochs=3", "model.lr=3e-3", "run.name=oos"]
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "oos"
    metrics = json.loads((run / "metrics.json").read_text())
    for method in oos.METHODS:
        for name in ("in_scope_accuracy", "oos_recall", "oos_precision", "threshold"):
            assert f"test/{method}/{name}" in metrics["test"], (method, name)
    assert metrics["valid"]["val/msp/threshold"] == metrics["test"]["test/msp/threshold"]  # validation's choice
    evaluated = json.loads(runner.invoke(app, ["eval", "-c", str(run), "--json"]).stdout)
    assert evaluated["test"]["test/energy/oos_recall"] == pytest.approx(metrics["test"]["test/energy/oos_recall"])

    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["a gift for my sister", "zzz qqq xxx"]}).to_csv(texts, index=False)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "-c", str(run), "-i", str(texts), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(row["out_of_scope"], bool) for row in rows)
