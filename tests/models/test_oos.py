"""Out-of-scope detection: thresholds chosen on validation, intents held out as unknown, predict marks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
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
    assert oos.flag(torch.tensor([[0.0, 0, 9], [9.0, 0, 0]]), "class", float("nan"), 2).tolist() == [True, False]
    predicted = oos.predictions_with_rejection(logits, "msp", threshold, 2)
    assert predicted.tolist() == [0, 0, 1, 0, 2, 2]
    # without out-of-scope rows in validation: keep 95% of in-scope rows
    keep = oos.choose_threshold(scores[:4], logits[:4], labels[:4], oos_label=2)
    assert keep == pytest.approx(float(torch.quantile(scores[:4], 0.05)))
    # the out-of-scope class's own logit never counts as in-scope confidence
    assert oos.in_scope_scores(torch.tensor([[0.0, 0.0, 9.0]]), "energy", 2).item() == pytest.approx(
        torch.logsumexp(torch.zeros(2), 0).item()
    )


def test_the_embedding_space_methods_flag_what_lies_far_from_every_intents_training_texts():
    generator = torch.Generator().manual_seed(0)
    # Two in-scope classes in 8 dimensions, stretched along the first axis; class 2 is out of scope (no rows).
    scale = torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 1])
    means = torch.zeros(3, 8)
    means[1, 1] = 6.0
    labels = torch.arange(2).repeat_interleave(200)
    train = means[labels] + torch.randn(400, 8, generator=generator) * scale
    space = oos.fit_training_space(train, labels, n_labels=3, oos_label=2)
    assert space.fitted("mahalanobis") and space.fitted("knn") and torch.isnan(space.means[2]).all()
    assert torch.allclose(space.means[:2], means[:2], atol=0.9)
    # Along the stretched axis 10 is near (2 standard deviations); across it 10 is far: Mahalanobis, not Euclid.
    near, far = torch.zeros(1, 8), torch.zeros(1, 8)
    near[0, 0], far[0, 2] = 10.0, -10.0
    scores = oos.in_scope_scores(torch.zeros(2, 3), "mahalanobis", 2, torch.cat([near, far]), space)
    assert scores[0] > scores[1]
    assert scores[0].item() == pytest.approx(-4.0, rel=0.3)  # squared distance ~ (10 / 5)^2
    # a query at a class mean scores (nearly) the highest possible: minus a squared distance near 0
    at_mean = oos.mahalanobis_scores(means[1:2], space)
    assert -0.5 < at_mean.item() <= 0
    # knn: cosine similarity to the nearest training text; a training text itself scores 1
    similarity = oos.in_scope_scores(torch.zeros(3, 3), "knn", 2, torch.cat([train[:1], near, far]), space)
    assert similarity[0].item() == pytest.approx(1.0, abs=1e-3)
    expected = (F.normalize(torch.cat([near, far]), dim=1) @ F.normalize(train, dim=1).T).max(1).values
    assert torch.allclose(similarity[1:], expected, atol=2e-3)  # the bank is kept in float16
    assert space.bank.shape == (400, 8)
    # out-of-scope training texts (CLINC150's oos-train) are never part of what in scope means
    with_oos = oos.fit_training_space(torch.cat([train, far]), torch.cat([labels, torch.tensor([2])]), 3, 2)
    assert len(with_oos.bank) == 400 and torch.isnan(with_oos.means[2]).all()
    for method in oos.SPACE_METHODS:
        with pytest.raises(ValueError, match="embeddings"):
            oos.in_scope_scores(torch.zeros(2, 3), method, 2)


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
    args += ["model.oos_method=knn"]
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
    # predict marks exactly the texts whose nearest training text is less similar than validation's threshold
    from recsys_cli.checkpoint import build_module, load_checkpoint

    model = build_module(load_checkpoint(run / "checkpoints" / "best.ckpt")).eval()
    space = model.training_space()
    assert space.fitted("knn") and len(space.bank) > 0
    threshold = float(model.oos_thresholds[oos.METHODS.index("knn")])
    encoded = model.tokenizer(["a gift for my sister", "zzz qqq xxx"], padding=True, return_tensors="pt")
    with torch.no_grad():
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        similarity = oos.knn_scores(model.embed(batch), space)
    clear = (similarity - threshold).abs() > 1e-2  # bf16 in predict may move a borderline text
    marked = torch.tensor([row["out_of_scope"] for row in rows])
    assert torch.equal(marked[clear], (similarity < threshold)[clear]), (similarity, threshold)


def test_checkpoints_from_before_the_embedding_space_methods_load_without_them(tiny_encoder):
    from recsys_cli.models.bert_intent import BertIntent

    model = BertIntent(n_labels=3, encoder=tiny_encoder, oos_method="knn")
    state = model.state_dict()
    state["oos_thresholds"] = torch.tensor([0.5, 2.0])  # msp and energy only
    del state["oos_means"], state["oos_precision"], state["oos_bank"]
    again = BertIntent(n_labels=3, encoder=tiny_encoder, oos_method="knn")
    again.load_state_dict(state)
    assert again.oos_thresholds[:2].tolist() == [0.5, 2.0] and torch.isnan(again.oos_thresholds[2])
    assert not any(again.training_space().fitted(method) for method in oos.SPACE_METHODS)
    assert oos.out_of_scope_rule(again, oos_label=2) == ("class", pytest.approx(float("nan"), nan_ok=True))


def test_auto_marks_by_the_rule_most_accurate_on_validation(tiny_encoder):
    from recsys_cli.models.bert_intent import BertIntent

    model = BertIntent(n_labels=3, encoder=tiny_encoder)  # oos_method: auto
    assert oos.out_of_scope_rule(model, oos_label=None) == (None, pytest.approx(float("nan"), nan_ok=True))
    assert oos.out_of_scope_rule(model, oos_label=2)[0] == "class"  # nothing validated yet
    model.oos_thresholds.copy_(torch.tensor([0.6, 3.0, -50.0, 0.8]))  # msp, energy, mahalanobis, knn
    assert oos.out_of_scope_rule(model, oos_label=2) == ("msp", pytest.approx(0.6))  # no out-of-scope validation texts
    # class, msp, energy, mahalanobis, knn: knn was best, but its training space was never fitted
    model.oos_validation_accuracy.copy_(torch.tensor([0.70, 0.78, 0.74, 0.76, 0.82]))
    assert oos.out_of_scope_rule(model, oos_label=2) == ("msp", pytest.approx(0.6))
    model.oos_bank = F.normalize(torch.randn(5, model.oos_bank.shape[1]), dim=1).half()
    assert oos.out_of_scope_rule(model, oos_label=2) == ("knn", pytest.approx(0.8))
    model.oos_method = "energy"
    assert oos.out_of_scope_rule(model, oos_label=2) == ("energy", pytest.approx(3.0))


def test_a_query_like_the_recommenders_training_queries_is_told_apart_from_foreign_words():
    """Training queries lie in two tight topics; a query near one counts as like them, one elsewhere does not,
    and predict's check on a checkpoint's stored queries agrees with the data's."""
    from recsys_cli.data.content import like_training
    from recsys_cli.data.spec import DataSpec
    from recsys_cli.families.recommender import like_stored_training

    generator = torch.Generator().manual_seed(0)
    topics = F.normalize(torch.randn(3, 16, generator=generator), dim=1)
    rows = torch.cat([topics[i % 2] + 0.05 * torch.randn(16, generator=generator) for i in range(40)]).view(40, 16)
    new = torch.stack([topics[0] + 0.05 * torch.randn(16, generator=generator), topics[2]])  # near, and foreign
    embeddings = torch.cat([torch.zeros(1, 16), rows, new])  # row 0: no query
    seen = torch.zeros(len(embeddings), dtype=torch.bool)
    seen[1:41] = True
    spec = DataSpec(query_in_training=seen.numpy())
    like_training(spec, embeddings)
    assert -1.0 < spec.query_floor < 1.0
    assert spec.query_like_training[1:42].all() and not spec.query_like_training[42]
    # The checkpoint keeps features with intent probabilities appended: only the embedding part is compared.
    probs = torch.softmax(torch.randn(len(embeddings), 5, generator=generator), dim=1)
    data = {"query_features": torch.cat([embeddings, probs], 1), "query_seen": seen, "query_floor": spec.query_floor}
    assert (like_stored_training(new.numpy(), data) == spec.query_like_training[41:]).all()
    assert oos.training_query_floor(embeddings[:1]) == -1.0  # a single training query: nothing is unlike
