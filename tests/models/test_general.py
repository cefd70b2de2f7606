"""The general (non-sequential) recommenders: BPR, ItemKNN and the two-tower model.

Each is trained through the real entry point on a small synthetic shop (planted intents) and must beat
popularity, survive a checkpoint round trip and predict for known and unknown users; the pieces that
carry each model's idea are checked against hand computations.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_cli.checkpoint import KEY, build_module, load_checkpoint
from recsys_cli.config import compose_config
from recsys_cli.data import batch as keys
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.features import item_feature_tokens
from recsys_cli.data.preprocess import TRAIN
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError
from recsys_cli.families.recommender import prepare_interactions
from recsys_cli.models.bpr import BPR, positive_pairs
from recsys_cli.models.ease import EASE, ease_weights
from recsys_cli.models.itemknn import ItemKNN, cosine_neighbours
from recsys_cli.models.twotower import TwoTower, in_batch_logits
from recsys_cli.tasks import evaluate, predict, train

N_GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 8, 15, 40


def planted_groups(path) -> None:
    """Users in 8 taste groups, each taking 11 of its group's 15 items plus 2 random ones, in random order.

    Popularity is flat, so Pop is near random; a model that finds the groups ranks the user's
    remaining group items first. Item titles name the group (the two-tower model reads them).
    """
    rng = np.random.default_rng(0)
    users = np.arange(N_GROUPS * USERS_PER_GROUP)
    group = users % N_GROUPS
    own = np.argsort(rng.random((len(users), ITEMS_PER_GROUP)), axis=1)[:, :11] + group[:, None] * ITEMS_PER_GROUP
    noise = rng.integers(0, N_GROUPS * ITEMS_PER_GROUP, (len(users), 2))
    items = np.concatenate([own, noise], axis=1)
    times = np.argsort(rng.random(items.shape), axis=1)
    frame = pd.DataFrame(
        {"user_id": np.repeat(users, items.shape[1]), "item_id": items.ravel(), "timestamp": times.ravel() + 1}
    ).drop_duplicates(["user_id", "item_id"])
    frame["title"] = "group" + (frame["item_id"] // ITEMS_PER_GROUP).astype(str) + " thing"
    frame.to_csv(path, index=False)


DATA = [
    "data=csv",
    "data.source.columns.item_text=title",
    "data.max_len=20",
    "data.batch_size=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "eval.mask_history=true",
    "train.patience=3",
]
# Short budgets for the test (not the recommended defaults): the data is small, so few epochs at a higher lr.
MODELS = {
    "bpr": ["model=bpr", "trainer.max_epochs=10", "model.lr=0.05"],
    "itemknn": ["model=itemknn", "model.k_neighbors=20"],
    "ease": ["model=ease", "model.reg_weight=10"],
    "twotower": ["model=twotower", "trainer.max_epochs=6", "model.lr=0.005", "model.hidden_size=32"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, train.TrainResult]:
    """Pop and the three models, each trained once on the same planted-group data."""
    root = tmp_path_factory.mktemp("general")
    planted_groups(root / "events.csv")
    common = [f"paths.data_dir={root / 'data'}", f"paths.runs_dir={root / 'runs'}", f"data.path={root / 'events.csv'}"]
    runs = {"pop": ["model=pop"], **MODELS}
    return {
        name: train.run(compose_config([*common, *DATA, *overrides, f"run.name={name}"]))
        for name, overrides in runs.items()
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_model_beats_popularity_on_planted_intents(trained, name):
    pop = trained["pop"].metrics["test"]["test/ndcg@10"]
    ndcg = trained[name].metrics["test"]["test/ndcg@10"]
    assert ndcg > 2 * pop, (name, ndcg, pop)


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_round_trip_gives_the_same_metrics(trained, name):
    result = trained[name]
    again = evaluate.run(result.best_checkpoint, output=result.run_dir / "again.json").metrics
    assert again["test"]["test/ndcg@10"] == pytest.approx(result.metrics["test"]["test/ndcg@10"], abs=1e-6)
    assert again["valid"]["val/ndcg@10"] == pytest.approx(result.metrics["valid"]["val/ndcg@10"], abs=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_for_a_known_user_and_an_unknown_user_with_a_history(trained, name, tmp_path):
    checkpoint = load_checkpoint(trained[name].best_checkpoint, kind="recommender")
    data = checkpoint[KEY]["data"]
    given = data["item_ids"][1:4]
    requests = tmp_path / "requests.jsonl"
    rows = [{"user_id": data["user_ids"][1], "history": []}, {"user_id": "nobody", "history": given}]
    requests.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "recs.jsonl"
    done = predict.run(trained[name].best_checkpoint, out, input_path=requests, top_k=5)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert done.counts["popularity fallback (no history)"] == 0
    assert [len(r["item_ids"]) for r in recs] == [5, 5]
    assert not set(recs[1]["item_ids"]) & set(given)  # seen items are excluded
    # The unknown user is scored from its history alone: a different history gives another ranking.
    model = build_module(checkpoint)
    history = torch.tensor([[1, 2, 3], [0, 0, 40]])
    with torch.no_grad():
        scores = model.score_all({keys.HISTORY: history, keys.USERS: torch.zeros(2, dtype=torch.long)})
    assert torch.isfinite(scores[:, 1:]).all() and not torch.equal(scores[0, 1:], scores[1, 1:])


def test_bpr_on_other_data_reads_each_user_through_the_checkpoint_vocabulary(trained, tmp_path):
    """Dropping the first users shifts every later user's contiguous index; eval must still find each
    user's own embedding, so the remaining users score exactly as they did in training."""
    result = trained["bpr"]
    events = pd.read_csv(result.run_dir.parent.parent / "events.csv")
    subset = tmp_path / "subset.csv"
    events[events["user_id"] >= 3].to_csv(subset, index=False)
    overrides = [*DATA, *MODELS["bpr"], f"data.path={subset}", f"paths.data_dir={tmp_path / 'data'}"]
    metrics = evaluate.run(
        result.best_checkpoint, overrides=overrides, output=tmp_path / "eval" / "metrics.json"
    ).metrics
    assert metrics["same_data_as_training"] is False
    before = pd.read_parquet(result.run_dir / "per_user" / "test.parquet").set_index("user_id")
    after = pd.read_parquet(tmp_path / "eval" / "per_user" / "test.parquet").set_index("user_id")
    assert len(after) == len(before) - 3 and set(after.index) < set(before.index)
    np.testing.assert_allclose(after["ndcg@10"], before.loc[after.index, "ndcg@10"], atol=1e-6)


# --- BPR -----------------------------------------------------------------------------------------


def test_bpr_pairs_cover_every_training_interaction_exactly_once(tmp_path):
    cfg = compose_config(["data=synthetic", "data.source.n_users=60", f"paths.data_dir={tmp_path}"])
    processed = prepare_interactions(cfg)[0]
    inter = processed.interactions[processed.interactions["split"] == TRAIN]
    expected = Counter(zip(inter["user_idx"].tolist(), inter["item_idx"].tolist()))
    # max_len 7 with stride 7 and 3: multi-window users, and users whose first window is left-padded
    for stride in (None, 3, 7, 12):  # a stride of max_len or more is max_len
        datamodule = SequenceDataModule(processed, max_len=7, batch_size=16, window_stride=stride)
        datamodule.setup()
        seen: Counter = Counter()
        for batch in datamodule.train_dataloader():
            rows, items = positive_pairs(batch)
            users = batch[keys.USERS][rows]
            seen.update(zip(users.tolist(), items.tolist()))
        # A user whose first window is exactly full has no padding that marks its first event.
        counts = inter.groupby("user_idx").size()
        full_first = set(counts.index[(counts - 1) % 7 == 0]) if stride != 3 else set()
        missing = expected - seen
        assert seen - expected == Counter(), stride  # nothing counted twice or invented
        assert all(user in full_first for user, _ in missing), stride
        assert sum(missing.values()) == len(full_first), stride


@pytest.mark.parametrize("reg_weight", [0.0, 0.01])
def test_bpr_dense_scores_give_the_loss_and_gradients_of_gathered_pairs(monkeypatch, reg_weight):
    import recsys_cli.models.bpr as bpr

    torch.manual_seed(0)
    model = BPR(n_items=9, max_len=4, n_users=5, embedding_size=3, num_negatives=2, reg_weight=reg_weight)
    batch = {
        keys.HISTORY: torch.tensor([[0, 0, 3, 4], [1, 2, 5, 6], [0, 7, 8, 9]]),
        keys.NEXT_ITEMS: torch.tensor([[0, 0, 4, 2], [2, 5, 6, 1], [0, 8, 9, 0]]),
        keys.USERS: torch.tensor([1, 2, 5]),
    }
    results = []
    for limit in (bpr.DENSE_SCORES_MAX, 0):  # dense scores, then gathered embeddings
        monkeypatch.setattr(bpr, "DENSE_SCORES_MAX", limit)
        model.zero_grad()
        torch.manual_seed(1)  # the same negatives on both paths
        loss = model.loss(batch)
        loss.backward()
        gradients = model.user_embedding.weight.grad.clone(), model.item_embedding.weight.grad.clone()
        results.append((loss.detach(), *gradients))
    for dense, gathered in zip(*results):
        torch.testing.assert_close(dense, gathered)
    assert results[0][2][0].abs().sum() == 0  # the padding item never gets a gradient


def test_bpr_negatives_never_equal_the_positive_and_cover_the_catalogue():
    model = BPR(n_items=6, max_len=4, n_users=3, num_negatives=4)
    positives = torch.randint(1, 7, (3000,))
    negatives = model.negatives(positives)
    assert negatives.shape == (3000, 4)
    assert (negatives != positives[:, None]).all()
    assert set(negatives.unique().tolist()) == {1, 2, 3, 4, 5, 6}


def test_bpr_scores_known_users_by_embedding_and_unknown_users_by_fold_in():
    torch.manual_seed(0)
    model = BPR(n_items=5, max_len=3, n_users=2, embedding_size=4).eval()
    history = torch.tensor([[0, 1, 3], [0, 1, 3], [2, 2, 4]])
    scores = model.score_all({keys.HISTORY: history, keys.USERS: torch.tensor([2, 0, 9])})
    items = model.item_embedding.weight
    assert torch.allclose(scores[0], items @ model.user_embedding.weight[2])
    assert torch.allclose(scores[1], items @ items[[1, 3]].mean(0))
    assert torch.allclose(scores[2], items @ items[[2, 2, 4]].mean(0))  # beyond the table: unknown


# --- ItemKNN -------------------------------------------------------------------------------------


def test_ease_weights_are_the_constrained_ridge_regression_of_every_item_on_the_others():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(np.float64)  # users x items 1..6
    users, items = np.nonzero(x)
    weights = ease_weights(torch.from_numpy(users), torch.from_numpy(items + 1), n_items=6, reg_weight=2.0).numpy()
    assert np.all(weights[0] == 0) and np.all(weights[:, 0] == 0) and np.all(np.diag(weights) == 0)
    b = weights[1:, 1:]
    # Steck's closed form is the minimiser of ||X - XB||^2 + reg ||B||^2 subject to diag(B) = 0: for each
    # item j, the ridge regression of column j on the other columns.
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + 2.0 * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], ridge, rtol=1e-4, atol=1e-5)


def test_ease_refuses_a_catalogue_too_large_for_its_dense_matrix():
    with pytest.raises(RecsysError, match=r"model\.max_items"):
        EASE(n_items=30000, max_len=20)


def test_itemknn_similarity_is_the_shrunk_cosine_of_a_hand_computed_matrix():
    # users x items (items 1..4):  u1: 1 2 3,  u2: 1 2,  u3: 2 4
    users = torch.tensor([1, 1, 1, 2, 2, 3, 3])
    items = torch.tensor([1, 2, 3, 1, 2, 2, 4])
    shrink = 1.0
    neighbour_items, weights = cosine_neighbours(users, items, n_items=4, k=3, shrink=shrink)
    counts = {1: 2, 2: 3, 3: 1, 4: 1}
    overlap = {(1, 2): 2, (1, 3): 1, (2, 3): 1, (2, 4): 1}
    dense = torch.zeros(5, 5)
    for (i, j), common in overlap.items():
        dense[i, j] = dense[j, i] = common / (np.sqrt(counts[i] * counts[j]) + shrink)
    rebuilt = torch.zeros(5, 5).scatter_add_(1, neighbour_items, weights)
    assert torch.allclose(rebuilt, dense, atol=1e-6)
    # keep only the top neighbour: item 2's best is item 1 (2 / (sqrt 6 + 1))
    top_items, top_weights = cosine_neighbours(users, items, n_items=4, k=1, shrink=shrink)
    assert top_items[2, 0] == 1 and top_weights[2, 0] == pytest.approx(2 / (np.sqrt(6) + 1))


def test_itemknn_scores_sum_the_neighbours_of_distinct_history_items():
    model = ItemKNN(n_items=4, max_len=4, k_neighbors=3, shrink=0.0)
    users = torch.tensor([1, 1, 1, 2, 2, 3, 3])
    items = torch.tensor([1, 2, 3, 1, 2, 2, 4])
    model.loss(
        {keys.USERS: users[:1], keys.HISTORY: torch.tensor([[0, 1, 2]]), keys.NEXT_ITEMS: torch.tensor([[0, 2, 3]])}
    )
    model.loss({keys.USERS: torch.tensor([2, 3]), keys.HISTORY: torch.tensor([[0, 0, 1], [0, 0, 2]]),
                keys.NEXT_ITEMS: torch.tensor([[0, 0, 2], [0, 0, 4]])})  # fmt: skip
    model._fit()
    similarity = torch.zeros(5, 5).scatter_add_(1, model.neighbour_items, model.neighbour_weights)
    expected_items, expected_weights = cosine_neighbours(users, items, n_items=4, k=3, shrink=0.0)
    assert torch.allclose(similarity, torch.zeros(5, 5).scatter_add_(1, expected_items, expected_weights))
    scores = model.score_all({keys.HISTORY: torch.tensor([[1, 4, 1, 0]])})  # item 1 twice counts once
    assert torch.allclose(scores[0], similarity[1] + similarity[4])


def test_itemknn_neighbours_rule_picks_the_side_the_k_neighbours_are_taken_on():
    # u1: 1 2 3, u2: 1 2, u3: 2 4 (shrink 0): sim(1,2)=2/sqrt6, sim(1,3)=1/sqrt2, sim(2,3)=sim(2,4)=1/sqrt3.
    # With k=1 each item keeps one neighbour: 1 -> 2, 2 -> 1, 3 -> 1, 4 -> 2.
    batch = {keys.USERS: torch.tensor([1, 2, 3]), keys.HISTORY: torch.tensor([[0, 1, 2], [0, 0, 1], [0, 0, 2]]),
             keys.NEXT_ITEMS: torch.tensor([[0, 2, 3], [0, 0, 2], [0, 0, 4]])}  # fmt: skip
    history = {keys.HISTORY: torch.tensor([[0, 1], [3, 4]])}
    scores = {}
    for rule in ("target", "history"):
        model = ItemKNN(n_items=4, max_len=4, k_neighbors=1, shrink=0.0, neighbours=rule)
        model.loss(batch)
        model._fit()
        scores[rule] = model.score_all(history)
    s12, s13, s23 = 2 / np.sqrt(6), 1 / np.sqrt(2), 1 / np.sqrt(3)
    # target: j is scored from its own neighbour, if the user has it (1 is the neighbour of 2 and 3)
    torch.testing.assert_close(scores["target"], torch.tensor([[0, 0, s12, s13, 0], [0, 0, 0, 0, 0]]).float())
    # history: each history item votes for its own neighbour (1 -> 2; 3 -> 1, 4 -> 2)
    torch.testing.assert_close(scores["history"], torch.tensor([[0, 0, s12, 0, 0], [0, s13, s23, 0, 0]]).float())
    with pytest.raises(RecsysError, match=r"unknown model\.neighbours='both'"):
        ItemKNN(n_items=4, max_len=4, neighbours="both")


def test_itemknn_history_len_keeps_only_the_most_recent_items():
    batch = {keys.USERS: torch.tensor([1, 2, 3]), keys.HISTORY: torch.tensor([[0, 1, 2], [0, 0, 1], [0, 0, 2]]),
             keys.NEXT_ITEMS: torch.tensor([[0, 2, 3], [0, 0, 2], [0, 0, 4]])}  # fmt: skip
    models = {}
    for length in (None, 1):
        models[length] = ItemKNN(n_items=4, max_len=4, k_neighbors=3, shrink=0.0, history_len=length)
        models[length].loss(batch)
        models[length]._fit()
    recent = models[1].score_all({keys.HISTORY: torch.tensor([[0, 3, 1, 2]])})  # left-padded: 2 is the latest
    torch.testing.assert_close(recent, models[None].score_all({keys.HISTORY: torch.tensor([[0, 0, 0, 2]])}))
    assert not torch.allclose(recent, models[None].score_all({keys.HISTORY: torch.tensor([[0, 3, 1, 2]])}))
    with pytest.raises(RecsysError, match="history_len=0 must be at least 1"):
        ItemKNN(n_items=4, max_len=4, history_len=0)


def test_itemknn_target_scores_follow_loaded_weights():
    fitted = ItemKNN(n_items=4, max_len=4, k_neighbors=2, shrink=0.0)
    fitted.loss({keys.USERS: torch.tensor([1]), keys.HISTORY: torch.tensor([[0, 1, 2]]),
                 keys.NEXT_ITEMS: torch.tensor([[0, 2, 3]])})  # fmt: skip
    fitted._fit()
    history = {keys.HISTORY: torch.tensor([[0, 1]])}
    model = ItemKNN(n_items=4, max_len=4, k_neighbors=2, shrink=0.0)
    assert model.score_all(history).abs().sum() == 0  # nothing fitted: the cached matrix is empty
    model.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(model.score_all(history), fitted.score_all(history))
    assert model.score_all(history).abs().sum() > 0


# --- two-tower -----------------------------------------------------------------------------------


def test_logq_correction_lowers_a_popular_item_against_a_rare_one():
    # Equal raw scores; item 1 fills most of the batch. With logQ correction the popular item's column
    # loses probability mass to the rare item's, relative to the uncorrected in-batch softmax.
    targets = torch.tensor([1, 1, 1, 1, 1, 1, 2, 3])
    vectors = torch.nn.functional.normalize(torch.ones(8, 4), dim=-1)
    counts = torch.bincount(targets, minlength=4).float()
    log_q = torch.log(counts / counts.sum()).clamp(min=-1e4)
    plain = in_batch_logits(vectors, vectors, targets, temperature=1.0).softmax(1)
    corrected = in_batch_logits(vectors, vectors, targets, temperature=1.0, log_q=log_q).softmax(1)
    row = 7  # positive: item 3; candidates: six copies of item 1, one item 2
    popular = torch.arange(6)
    assert corrected[row, popular].sum() < plain[row, popular].sum()
    assert corrected[row, 6] > plain[row, 6]
    assert (plain[0, 1:6] == 0).all()  # copies of a row's own positive are never its negatives


def test_twotower_item_features_live_in_the_weights_and_come_back_from_the_spec():
    items = pd.DataFrame({"item_idx": [1, 2, 3], "title": ["red shoe", "blue shoe", "green hat"]})
    features = torch.from_numpy(item_feature_tokens(items, n_items=3, max_tokens=4))
    spec = DataSpec(n_items=3, max_len=5, item_features=features, item_feature_vocab=int(features.max()) + 1)
    sizes = {"embedding_size": 8, "hidden_size": 8, "output_size": 8}
    model = TwoTower(**TwoTower.data_arguments(spec), **sizes)
    hparams = dict(model.hparams)
    assert "item_features" not in hparams
    # A checkpoint keeps the spec as shapes only: the rebuilt buffer is zeros until the weights refill it.
    stored = DataSpec.from_meta(spec.to_meta())
    assert stored.item_features.shape == features.shape and not stored.item_features.any()
    rebuilt = TwoTower(**{**hparams, **TwoTower.data_arguments(stored)})
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.item_features, features)
    # Items sharing a word share part of their input: "shoe" makes items 1 and 2 closer than 1 and 3.
    inputs = rebuilt.item_inputs(torch.tensor([1, 2, 3])) - rebuilt.item_embedding(torch.tensor([1, 2, 3]))
    cos = torch.nn.functional.cosine_similarity
    assert cos(inputs[0], inputs[1], dim=0) > cos(inputs[0], inputs[2], dim=0)
    without = TwoTower(n_items=3, max_len=5, item_features=features, use_item_features=False)
    assert without.word_embedding is None and without.hparams["feature_vocab_size"] is None


def test_item_word_features_are_derived_only_for_a_model_that_reads_them():
    items = pd.DataFrame({"item_idx": [1, 2, 3], "title": ["red shoe", "blue shoe", "green hat"]})
    spec = DataSpec(n_items=3, max_len=5, items=items)
    BPR.data_arguments(spec)
    assert spec.item_features is None and spec.to_meta()["item_features"] is None
    arguments = TwoTower.data_arguments(spec)
    expected = torch.from_numpy(item_feature_tokens(items, n_items=3))
    assert torch.equal(arguments["item_features"], expected) and arguments["feature_vocab_size"] == 6
    assert spec.to_meta()["item_features"] == {"tensor": list(expected.shape), "dtype": "int64"}
    assert "items" not in spec.to_meta()
