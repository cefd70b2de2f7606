"""The flagship end to end: an intent encoder, then the recommender that reads item text and user queries."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from recsys_cli.checkpoint import KEY, build_module, load_checkpoint
from recsys_cli.config import compose_config
from recsys_cli.errors import RecsysError
from recsys_cli.tasks import evaluate, predict, train
from tests.conftest import TINY_DATA, TINY_MODEL

FLAGSHIP = ["model=intent_sasrec", *TINY_MODEL, "trainer=debug", "logger=none"]


@pytest.fixture(scope="module")
def intent_checkpoint(tmp_path_factory, tiny_encoder):
    """A bert_intent model fine-tuned (a few steps) on the tiny shop's session queries."""
    root = tmp_path_factory.mktemp("intent")
    overrides = [
        f"paths.data_dir={root / 'data'}",
        f"paths.runs_dir={root / 'runs'}",
        *TINY_DATA,
        "model=bert_intent",
        f"model.encoder={tiny_encoder}",
        "trainer=debug",
        "logger=none",
        "run.name=intent",
    ]
    return train.run(compose_config(overrides), overrides=overrides).best_checkpoint


def test_the_recommender_reads_queries_through_the_intent_model_and_explains(
    workdir, tiny_encoder, intent_checkpoint, tmp_path
):
    overrides = [
        *workdir,
        *TINY_DATA,
        *FLAGSHIP,
        f"model.text_encoder={tiny_encoder}",
        f"model.intent_checkpoint={intent_checkpoint}",
        "run.name=flagship",
    ]
    result = train.run(compose_config(overrides), overrides=overrides)
    test = result.metrics["test"]
    assert test["test/new_session/users"] > 0 and test["test/same_session/users"] > 0
    assert test["test/new_session/users"] + test["test/same_session/users"] == pytest.approx(120)

    evaluated = evaluate.run(result.best_checkpoint, output=tmp_path / "eval.json")
    assert evaluated.metrics["test"] == pytest.approx(test, rel=1e-5, abs=1e-6)
    query_only = evaluate.run(result.best_checkpoint, ["eval.query_only=true"], output=tmp_path / "q.json")
    assert query_only.metrics["test"]["test/ndcg@10"] != pytest.approx(test["test/ndcg@10"])

    sessions = tmp_path / "sessions.jsonl"
    rows = [
        {"user_id": "u00001", "history": None, "query": None},  # a known user
        {"user_id": None, "history": None, "query": "a gift for a runner"},  # only a query
        {"user_id": None, "history": [], "query": None},  # nothing: popularity
        {"user_id": None, "history": ["i0001", "i0002"], "query": "cheap pens"},
    ]
    pd.DataFrame(rows).to_json(sessions, orient="records", lines=True)
    out = tmp_path / "recs.jsonl"
    done = predict.run(result.best_checkpoint, out, input_path=sessions, top_k=5, explain=True)
    written = pd.read_json(out, lines=True, dtype={"user_id": str})
    assert list(written["row"]) == [0, 1, 2, 3]
    assert done.counts["ranked by the query alone (no history)"] == 1
    assert done.counts["popularity fallback (no history)"] == 1
    # A row with words gets the intent model's label (a category of the shop) and its probability.
    assert written["intent"].isna().tolist() == [True, False, True, False]
    assert written.loc[1, "intent"] in {"running shoes", "smartphones", "coffee", "books"} or written.loc[1, "intent"]
    assert 0 < written.loc[1, "intent_probability"] <= 1
    # Each recommended item is explained by history items; a row without history has none to name.
    assert all(len(row) == 5 for row in written["because"])
    assert set(written.loc[0, "because"]) != {""} and set(written.loc[1, "because"]) == {""}

    csv = tmp_path / "recs.csv"
    predict.run(result.best_checkpoint, csv, input_path=sessions, top_k=5, explain=True)
    assert "because" in pd.read_csv(csv).columns

    # A known user's history carries the queries it had in training: predict scores it as eval does.
    checkpoint = load_checkpoint(result.best_checkpoint, kind="recommender")
    data, model = checkpoint[KEY]["data"], build_module(checkpoint)
    start, end = data["history_indptr"][1].item(), data["history_indptr"][2].item()
    items = data["history_items"][start:end].long()[-model.max_len :]
    queries = data["query_features"][data["history_queries"][start:end].long()[-model.max_len :]]
    history = torch.zeros(1, model.max_len, dtype=torch.long)
    history[0, -len(items) :] = items
    features = torch.zeros(1, model.max_len + 1, queries.shape[1])
    features[0, model.max_len - len(items) : model.max_len] = queries
    with torch.no_grad():
        scores = model.score_all({"history": history, "queries": features})[0]
    scores[0] = -torch.inf
    scores[data["history_items"][start:end].long()] = -torch.inf
    expected = [data["item_ids"][i] for i in torch.topk(scores, 5).indices.tolist()]
    assert written.loc[0, "item_ids"] == expected


def test_a_query_changes_the_recommendations_for_the_same_history(workdir, tiny_encoder, tmp_path):
    overrides = [*workdir, *TINY_DATA, *FLAGSHIP, f"model.text_encoder={tiny_encoder}", "run.name=q"]
    overrides += ["trainer.max_epochs=3", "trainer.limit_train_batches=1.0"]
    result = train.run(compose_config(overrides), overrides=overrides)
    sessions = tmp_path / "sessions.csv"
    pd.DataFrame({"history": ["i0001 i0002"] * 2, "query": ["running shoes for a marathon", ""]}).to_csv(
        sessions, index=False
    )
    out = tmp_path / "recs.jsonl"
    predict.run(result.best_checkpoint, out, input_path=sessions, top_k=5)
    written = pd.read_json(out, lines=True)
    assert written.loc[0, "scores"] != written.loc[1, "scores"]


def test_explain_needs_item_vectors_and_text_models_refuse_it(tiny, tmp_path):
    overrides = [*tiny, "model=pop", "run.name=pop"]
    result = train.run(compose_config(overrides))
    with pytest.raises(RecsysError, match="item vectors"):
        predict.run(result.best_checkpoint, tmp_path / "r.jsonl", all_users=True, explain=True)


@pytest.mark.parametrize("tuning", ["top", "lora"])
def test_tuning_the_text_encoder_trains_its_top_layer_from_a_frozen_run(workdir, tiny_encoder, tuning, tmp_path):
    from transformers import AutoModel

    base = [*workdir, *TINY_DATA, *FLAGSHIP, f"model.text_encoder={tiny_encoder}", "model.query_conditioning=none"]
    frozen = train.run(compose_config([*base, "run.name=frozen"]), overrides=[*base, "run.name=frozen"])
    overrides = [*base, f"model.text_tuning={tuning}", f"model.init_from={frozen.best_checkpoint}", "run.name=tuned"]
    overrides += ["model.text_lr=0.01"]
    tuned = train.run(compose_config(overrides), overrides=overrides)
    assert tuned.metrics["init_copied"] > 0  # the frozen run's SASRec and adaptor weights start it

    model = build_module(load_checkpoint(tuned.best_checkpoint, kind="recommender"))
    layers = model.items.tuned_text.layers
    pretrained = AutoModel.from_pretrained(tiny_encoder).encoder.layer[-1].state_dict()
    if tuning == "top":
        changed = [name for name, value in layers[0].state_dict().items() if not torch.equal(value, pretrained[name])]
        assert changed, "the top layer did not train"
    else:
        assert any(
            name.endswith("lora_B.default.weight") and value.abs().sum() > 0
            for name, value in layers.state_dict().items()
        )
        base_weights = {n.replace(".base_layer", ""): v for n, v in layers[0].state_dict().items() if "lora_" not in n}
        assert all(torch.equal(value, pretrained[name]) for name, value in base_weights.items())
    # The checkpoint scores alone (the hidden states entering the tuned layer travel with it) as training did.
    evaluated = evaluate.run(tuned.best_checkpoint, output=tmp_path / "eval.json")
    assert evaluated.metrics["test"] == pytest.approx(tuned.metrics["test"], rel=1e-4, abs=1e-5)


def test_tuned_text_starts_where_the_frozen_encoder_ends(tiny_encoder):
    """Before any step, the tuned layer over the cached hidden states gives the frozen embeddings."""
    from recsys_cli.data.content import TextEmbedder
    from recsys_cli.models.item_repr import TunedText

    texts = ["", "running shoes for a marathon", "cheap pens", "a gift"]
    embedder = TextEmbedder(str(tiny_encoder), precision="32-true")
    inputs = embedder.layer_inputs(texts, 1)
    tuned = TunedText(inputs["config"], 1, inputs["hidden"], inputs["mask"], inputs["layers"]).eval()
    with torch.no_grad():
        pooled = tuned()
    frozen = torch.from_numpy(embedder.embed(texts))
    assert pooled[0].abs().sum() == 0
    torch.testing.assert_close(pooled, frozen, atol=0.05, rtol=0.05)  # the cache is bf16


@pytest.mark.parametrize("name", ["gru4rec", "hstu"])
def test_gru4rec_and_hstu_read_item_text_by_config(workdir, tiny_encoder, name, tmp_path):
    overrides = [*workdir, *TINY_DATA, f"model={name}", "trainer=debug", "logger=none", f"run.name={name}_text"]
    overrides += ["model.fusion=add", f"model.text_encoder={tiny_encoder}"]
    result = train.run(compose_config(overrides), overrides=overrides)
    model = build_module(load_checkpoint(result.best_checkpoint, kind="recommender"))
    assert model.items is not None and model.items.fusion == "add"
    evaluated = evaluate.run(result.best_checkpoint, output=tmp_path / "eval.json")
    assert evaluated.metrics["test"] == pytest.approx(result.metrics["test"], rel=1e-5, abs=1e-6)


def test_a_query_out_of_the_intent_models_scope_falls_back_to_the_history(workdir, tiny_encoder, tmp_path, monkeypatch):
    """An intent model trained with intents held out as unknown marks out-of-scope queries; unless such a query is
    like the recommender's training queries, predict and eval then rank that row by its history alone (by
    popularity without one), as if it had said nothing."""
    from recsys_cli.evaluation import oos

    intent = [*workdir, *TINY_DATA, "model=bert_intent", f"model.encoder={tiny_encoder}", "trainer=debug"]
    intent += ["logger=none", "data.text.unknown_labels=0.25", "run.name=intent_oos"]
    intent_checkpoint = train.run(compose_config(intent), overrides=intent).best_checkpoint
    overrides = [*workdir, *TINY_DATA, *FLAGSHIP, f"model.text_encoder={tiny_encoder}", "run.name=flag_oos"]
    overrides += [f"model.intent_checkpoint={intent_checkpoint}"]
    recommender = train.run(compose_config(overrides), overrides=overrides).best_checkpoint
    sessions = tmp_path / "sessions.jsonl"
    rows = [
        {"history": ["i0001", "i0002"], "query": "running shoes for a marathon"},
        {"history": ["i0001", "i0002"], "query": None},
        {"history": None, "query": "running shoes for a marathon"},
    ]
    pd.DataFrame(rows).to_json(sessions, orient="records", lines=True)

    def set_rule(threshold: float, floor: float) -> None:
        # The intent model's rule set by hand: msp below 2 flags every query, below -1 none; the recommender's
        # similarity floor above 1 makes no query like its training queries, below -1 every one.
        checkpoint = torch.load(intent_checkpoint, weights_only=False)
        checkpoint["hyper_parameters"]["oos_method"] = "msp"
        checkpoint["state_dict"]["oos_thresholds"][0] = threshold
        torch.save(checkpoint, intent_checkpoint)
        checkpoint = torch.load(recommender, weights_only=False)
        checkpoint[KEY]["data"]["query_floor"] = floor
        torch.save(checkpoint, recommender)
        monkeypatch.setattr(oos, "training_query_floor", lambda bank: floor)  # as eval computes it from the data

    def predicted(name: str) -> tuple[pd.DataFrame, dict]:
        done = predict.run(recommender, tmp_path / name, input_path=sessions, top_k=5, explain=True)
        return pd.read_json(tmp_path / name, lines=True), done.counts

    set_rule(2.0, 2.0)
    outside, counts = predicted("outside.jsonl")
    assert counts["queries out of scope (history alone)"] == 2
    assert counts["popularity fallback (no history)"] == 1  # the query-only row has nothing left to go by
    assert outside.loc[0, "scores"] == pytest.approx(outside.loc[1, "scores"])  # as if it had said nothing
    assert outside.loc[0, "intent"] == "out of scope"
    # Evaluation reads the stored queries the same way (training queries too: the floor is above 1 here), reports
    # their targets apart, and can keep them.
    history = evaluate.run(recommender, output=tmp_path / "h.json").metrics["test"]
    kept = evaluate.run(recommender, ["eval.oos_queries=keep"], output=tmp_path / "k.json").metrics["test"]
    assert history["test/query_out_of_scope/users"] > 0 and history.get("test/query_in_scope/users", 0) == 0
    assert history["test/ndcg@10"] != pytest.approx(kept["test/ndcg@10"])
    with pytest.raises(RecsysError, match=r"unknown eval\.oos_queries 'drop'; use one of: history, keep"):
        evaluate.run(recommender, ["eval.oos_queries=drop"], output=tmp_path / "x.json")

    set_rule(2.0, -2.0)  # out of scope, but like the training queries: read as given
    like, counts = predicted("like.jsonl")
    assert counts["queries out of scope (history alone)"] == 0
    assert counts["queries out of scope, like training queries (read as given)"] == 2
    assert like.loc[0, "scores"] != pytest.approx(like.loc[1, "scores"])
    history = evaluate.run(recommender, output=tmp_path / "h1.json").metrics["test"]
    assert history["test/ndcg@10"] == pytest.approx(kept["test/ndcg@10"])

    set_rule(-1.0, 2.0)
    inside, counts = predicted("inside.jsonl")
    assert counts["queries out of scope (history alone)"] == 0
    assert counts["ranked by the query alone (no history)"] == 1
    assert inside.loc[0, "scores"] != pytest.approx(inside.loc[1, "scores"])  # the query counts again
    history = evaluate.run(recommender, output=tmp_path / "h2.json").metrics["test"]
    assert history.get("test/query_out_of_scope/users", 0) == 0 and history["test/query_in_scope/users"] > 0
    assert history["test/ndcg@10"] == pytest.approx(kept["test/ndcg@10"])
