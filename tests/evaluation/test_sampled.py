"""Sampled ranking: the negatives, the metrics against hand computation and full ranking, and the CLI."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.data import batch as keys
from recsys_cli.evaluation.protocol import (
    SAMPLED_WARNING,
    RankingEvaluator,
    candidate_lists,
    evaluate_batch,
    forbidden_items,
    sampled_metrics,
)
from recsys_cli.evaluation.sampling import sample_negatives, splitmix64
from recsys_cli.models.base import Recommender
from tests.conftest import TINY_MODEL

N_ITEMS = 30


def eval_batch(users, histories, targets):
    """An evaluation batch as the datamodule builds it (targets right-padded, seen pairs flat)."""
    width = max(len(t) for t in targets)
    rows = [row for row, history in enumerate(histories) for _ in history]
    return {
        keys.USERS: torch.tensor(users),
        keys.TARGETS: torch.tensor([t + [0] * (width - len(t)) for t in targets]),
        keys.SEEN_ROWS: torch.tensor(rows, dtype=torch.long),
        keys.SEEN_ITEMS: torch.tensor([item for history in histories for item in history], dtype=torch.long),
    }


USERS = [4, 7, 9]
HISTORIES = [[1, 2, 3, 4, 5], [10, 11], list(range(1, 21))]
TARGETS = [[6], [12, 13], [21]]


def test_splitmix64_matches_the_reference_generator():
    def reference(x):  # Steele et al.'s SplitMix64 output function on unsigned 64-bit integers
        mask = (1 << 64) - 1
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    states = [0, 1, 12345, 2**62 + 7, 2**63 - 1]
    got = splitmix64(torch.tensor(states)).tolist()
    assert [value & ((1 << 64) - 1) for value in got] == [reference(state) for state in states]


@pytest.mark.parametrize("popularity", [False, True])
def test_negatives_avoid_history_and_targets_are_distinct_and_fixed_per_user(popularity):
    batch = eval_batch(USERS, HISTORIES, TARGETS)
    counts = torch.arange(N_ITEMS + 1).double() if popularity else None
    negatives = sample_negatives(batch[keys.USERS], forbidden_items(batch, N_ITEMS), 8, seed=3, counts=counts)
    assert negatives.shape == (3, 8)
    for row, (history, targets) in enumerate(zip(HISTORIES, TARGETS)):
        drawn = negatives[row].tolist()
        assert len(set(drawn)) == 8 and 0 not in drawn
        assert not set(drawn) & (set(history) | set(targets))
    # the same user gets the same negatives in another round, in another batch, alone or with others
    again = sample_negatives(batch[keys.USERS], forbidden_items(batch, N_ITEMS), 8, seed=3, counts=counts)
    assert torch.equal(negatives, again)
    alone = eval_batch([USERS[1]], [HISTORIES[1]], [TARGETS[1]])
    assert torch.equal(
        sample_negatives(alone[keys.USERS], forbidden_items(alone, N_ITEMS), 8, 3, counts), negatives[1:2]
    )
    other_seed = sample_negatives(batch[keys.USERS], forbidden_items(batch, N_ITEMS), 8, seed=4, counts=counts)
    assert not torch.equal(negatives, other_seed)


def test_a_user_with_fewer_allowed_items_than_asked_gets_all_of_them_then_padding():
    batch = eval_batch([1], [list(range(1, 26))], [[26]])  # items 27..30 are all that is left
    negatives = sample_negatives(batch[keys.USERS], forbidden_items(batch, N_ITEMS), 6, seed=0)
    assert sorted(negatives[0, :4].tolist()) == [27, 28, 29, 30] and negatives[0, 4:].tolist() == [0, 0]


@pytest.mark.parametrize("n_items", [4, 200])  # the exact top-k pass, and oversampling with rejection
def test_popularity_negatives_follow_training_counts(n_items):
    counts = torch.zeros(n_items + 1)
    counts[2:5] = torch.tensor([1.0, 2.0, 7.0])  # items never seen in training (1, 5, ...) are never drawn
    users = torch.arange(1, 20001)
    forbidden = torch.zeros(len(users), n_items + 1, dtype=torch.bool)
    forbidden[:, 0] = True
    drawn = sample_negatives(users, forbidden, 1, seed=0, counts=counts)[:, 0]
    shares = torch.bincount(drawn, minlength=n_items + 1).double() / len(users)
    assert shares[2:5].sum() == 1
    assert torch.allclose(shares[2:5], torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=0.015)


@pytest.mark.parametrize("popularity", [False, True])
def test_oversampled_negatives_on_a_large_catalogue_and_the_fallback_for_a_heavy_user(popularity):
    n_items, generator = 500, torch.Generator().manual_seed(0)
    histories = [torch.randperm(n_items, generator=generator)[:50].add(1).tolist() for _ in range(40)]
    histories.append(list(range(1, 491)))  # a heavy user: only items 492..500 are left to sample
    targets = [[h[0] % n_items + 1] if h[0] % n_items + 1 not in h else [491] for h in histories]
    users = list(range(1, 42))
    batch = eval_batch(users, histories, targets)
    counts = torch.arange(n_items + 1).double() if popularity else None
    negatives = sample_negatives(batch[keys.USERS], forbidden_items(batch, n_items), 20, seed=5, counts=counts)
    for row, (history, target) in enumerate(zip(histories, targets)):
        drawn = [item for item in negatives[row].tolist() if item]
        assert len(set(drawn)) == len(drawn) and not set(drawn) & (set(history) | set(target))
        assert len(drawn) == (20 if row < 40 else 9)
    assert sorted(negatives[40, :9].tolist()) == list(range(492, 501)) and negatives[40, 9:].eq(0).all()
    # the same negatives for a user scored alone
    alone = eval_batch(users[3:4], histories[3:4], targets[3:4])
    again = sample_negatives(alone[keys.USERS], forbidden_items(alone, n_items), 20, seed=5, counts=counts)
    assert torch.equal(again, negatives[3:4])


def test_sampled_metrics_match_hand_computation_and_ties_count_against_the_target():
    negatives = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8]])  # user 0 had only three negatives left
    targets = torch.tensor([[2, 0], [3, 4]])
    candidates = candidate_lists(negatives, targets)  # [negatives..., targets...]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.0, 0.5, 0.0],  # target 2 (0.5) ties negative 7 (0.5): ranked 3rd, not 2nd
            [0.1, 0.2, 0.3, 0.4, 0.9, 0.35],  # targets 3 (0.9) ranked 1st, 4 (0.35) 3rd
        ]
    )
    m = sampled_metrics(scores, candidates, n_negatives=4, ks=[1, 2, 3])
    assert m["hr@2"].tolist() == [0.0, 1.0] and m["hr@3"].tolist() == [1.0, 1.0]
    assert m["mrr@3"].tolist() == pytest.approx([1 / 3, 1.0])
    assert m["ndcg@3"][0].item() == pytest.approx(1 / math.log2(4))
    assert m["ndcg@3"][1].item() == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["recall@3"].tolist() == pytest.approx([1.0, 1.0]) and m["recall@1"].tolist() == [0.0, 0.5]
    # a constant scorer earns nothing: every target ties with every negative and ranks below all of them
    flat = sampled_metrics(torch.zeros(2, 6), candidates, n_negatives=4, ks=[3])
    assert flat["hr@3"].tolist() == [0.0, 0.0]


def test_with_every_non_history_item_as_negative_sampled_ranking_equals_full_ranking_masked():
    torch.manual_seed(0)
    batch = eval_batch(USERS, HISTORIES, TARGETS)
    scores = torch.randn(3, N_ITEMS + 1)
    full = evaluate_batch(scores, batch, [1, 5, 10], mask_history=True)
    negatives = sample_negatives(batch[keys.USERS], forbidden_items(batch, N_ITEMS), N_ITEMS, seed=1)
    candidates = candidate_lists(negatives, batch[keys.TARGETS])
    sampled = sampled_metrics(scores.gather(1, candidates), candidates, N_ITEMS, [1, 5, 10])
    assert set(sampled) == set(full)
    for name in full:
        assert torch.allclose(sampled[name], full[name]), name


class Scorer(Recommender):
    """Fixed scores; ``score`` is its own (not gathered from ``score_all``), as SASRec's is."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__(n_items=scores.shape[1] - 1, max_len=5)
        self.fixed = scores
        self.candidate_calls = 0

    def score_all(self, batch):
        return self.fixed[batch[keys.USERS]]

    def score(self, batch, item_ids):
        self.candidate_calls += 1
        return self.score_all(batch).gather(1, item_ids)

    def log_dict(self, *args, **kwargs):  # outside a Trainer
        pass


def test_evaluator_scores_candidates_with_the_model_and_repeats_its_numbers_every_round():
    torch.manual_seed(1)
    model = Scorer(torch.randn(10, N_ITEMS + 1))
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, loggers=[], current_epoch=0, global_step=0)
    evaluator = RankingEvaluator([5, 10], item_popularity=torch.ones(N_ITEMS + 1), ranking="sampled", num_negatives=10)
    rounds = []
    for _ in range(2):
        evaluator.on_validation_epoch_start(trainer, model)
        batch = eval_batch(USERS, HISTORIES, TARGETS)
        evaluator.on_validation_batch_end(trainer, model, model.score_all(batch), batch, 0)
        evaluator.on_validation_epoch_end(trainer, model)
        rounds.append(dict(evaluator.results["val"]))
    assert model.candidate_calls == 2
    assert rounds[0] == rounds[1]
    assert evaluator.per_user["val"]["user"].tolist() == USERS


def test_unknown_ranking_or_sampler_is_a_user_error():
    from recsys_cli.errors import RecsysError

    with pytest.raises(RecsysError, match=r"eval\.ranking"):
        RankingEvaluator([10], ranking="smapled")
    with pytest.raises(RecsysError, match=r"eval\.negatives"):
        RankingEvaluator([10], ranking="sampled", negatives="zipf")
    with pytest.raises(RecsysError, match=r"eval\.num_negatives"):
        RankingEvaluator([10], ranking="sampled", num_negatives=0)


def test_cli_sampled_run_states_its_protocol_and_writes_per_user_files(tiny, tmp_path):
    runner = CliRunner()
    sampled = ["eval.ranking=sampled", "eval.num_negatives=20", "eval.negatives=popularity", "eval.negative_seed=7"]
    result = runner.invoke(app, ["train", *tiny, *TINY_MODEL, *sampled, "run.name=sampled"])
    assert result.exit_code == 0, result.output
    assert "sampled metrics can rank models differently" in " ".join(result.output.split())
    run = tmp_path / "runs" / "sampled"
    metrics = json.loads((run / "metrics.json").read_text())
    protocol = metrics["protocol"]
    assert (protocol["ranking"], protocol["num_negatives"], protocol["negatives"]) == ("sampled", 20, "popularity")
    assert protocol["warning"] == SAMPLED_WARNING
    assert "20 popularity negatives" in protocol["description"] and "seed 7" in protocol["description"]
    assert {"test/coverage@10", "test/novelty@10", "test/arp@10", "val/ndcg@10"} <= set(metrics["test"]) | set(
        metrics["valid"]
    )

    users = pd.read_parquet(f"{metrics['processed_data']}/users.parquet")
    ids = dict(zip(users["user_idx"], users["user_id"]))
    for split, prefix in (("valid", "val"), ("test", "test")):
        frame = pd.read_parquet(metrics["per_user"][split])
        assert metrics["per_user"][split] == str(run / "per_user" / f"{split}.parquet")
        assert list(frame.columns[:2]) == ["user_id", "user_idx"] and "ndcg@10" in frame and "arp@20" in frame
        assert "coverage@10" not in frame  # a list-level metric has no per-user value
        assert frame["user_idx"].is_unique and frame["user_id"].tolist() == [ids[i] for i in frame["user_idx"]]
        for name in frame.columns[2:]:
            assert frame[name].mean() == pytest.approx(metrics[split][f"{prefix}/{name}"], abs=1e-6), name

    result = runner.invoke(app, ["eval", "--checkpoint", str(run / "checkpoints" / "best.ckpt")])
    assert result.exit_code == 0, result.output
    again = json.loads((run / "eval" / "metrics.json").read_text())
    assert again["protocol"]["warning"] == SAMPLED_WARNING
    # the same negatives as in training (they depend only on seed and user), so the same numbers
    for name, value in metrics["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name
    frame = pd.read_parquet(run / "eval" / "per_user" / "test.parquet")
    assert again["per_user"]["test"] == str(run / "eval" / "per_user" / "test.parquet")
    assert frame["ndcg@10"].mean() == pytest.approx(again["test"]["test/ndcg@10"], abs=1e-6)
