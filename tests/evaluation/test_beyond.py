"""Beyond-accuracy metrics (coverage, novelty, ARP) against hand computation, and per-user metric files."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from recsys_cli.data import batch as keys
from recsys_cli.evaluation.metrics import list_metrics, self_information
from recsys_cli.evaluation.protocol import RankingEvaluator
from recsys_cli.evaluation.reports import write_per_user

# Training counts of items 1..5 (index 0 is padding); 20 events. Item 3 never occurs in training.
COUNTS = torch.tensor([0.0, 10.0, 5.0, 0.0, 1.0, 4.0])


def test_self_information_uses_training_shares_and_counts_an_unseen_item_once():
    info = self_information(COUNTS)
    expected = [1.0, 2.0, math.log2(20), math.log2(20), -math.log2(0.2)]
    assert info[1:].tolist() == pytest.approx(expected)


def user_batch(user: int, ranking: list[int], seen: list[int] = ()) -> tuple[torch.Tensor, dict]:
    """Scores that rank ``ranking`` first (in that order) and a one-user evaluation batch."""
    scores = torch.zeros(1, 6)
    scores[0, ranking] = torch.tensor([10.0 - r for r in range(len(ranking))])
    batch = {
        keys.USERS: torch.tensor([user]),
        keys.TARGETS: torch.tensor([[ranking[0]]]),
        keys.SEEN_ROWS: torch.zeros(len(seen), dtype=torch.long),
        keys.SEEN_ITEMS: torch.tensor(list(seen), dtype=torch.long),
    }
    return scores, batch


class Logger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))


def fake_trainer(*loggers):
    return SimpleNamespace(sanity_checking=False, world_size=1, loggers=list(loggers), current_epoch=3, global_step=7)


def run_round(evaluator, batches, trainer=None, module=None):
    trainer = trainer or fake_trainer()
    module = module or SimpleNamespace(log_dict=lambda *args, **kwargs: None)
    evaluator.on_test_epoch_start(trainer, module)
    for index, (scores, batch) in enumerate(batches):
        evaluator.on_test_batch_end(trainer, module, scores, batch, index)
    evaluator.on_test_epoch_end(trainer, module)
    return evaluator.results["test"]


def test_every_metric_reaches_the_loggers_and_only_log_keys_go_through_lightning():
    logged = []
    module = SimpleNamespace(log_dict=lambda metrics, **kwargs: logged.append((dict(metrics), kwargs)))
    logger = Logger()
    evaluator = RankingEvaluator([2, 3], item_popularity=COUNTS, log_keys=["test/ndcg@3", "val/ndcg@3"])
    metrics = run_round(evaluator, [user_batch(1, [1, 2, 4])], fake_trainer(logger), module)
    assert logged == [({"test/ndcg@3": metrics["test/ndcg@3"]}, {"sync_dist": False, "logger": False})]
    assert logger.rows == [(7, {**metrics, "epoch": 3})]
    everything = RankingEvaluator([2], item_popularity=COUNTS)  # no log_keys: every metric for callbacks too
    logged.clear()
    metrics = run_round(everything, [user_batch(1, [1, 2, 4])], fake_trainer(), module)
    assert logged[0][0] == metrics


def test_coverage_novelty_and_arp_match_hand_computation_across_batches():
    # user 1's top 3: items 1, 2, 4; user 2's: items 1, 5, 3 -- scored in two separate batches
    evaluator = RankingEvaluator([2, 3], item_popularity=COUNTS)
    metrics = run_round(evaluator, [user_batch(1, [1, 2, 4]), user_batch(2, [1, 5, 3])])
    log20, info5 = math.log2(20), -math.log2(0.2)
    assert metrics["test/coverage@2"] == pytest.approx(3 / 5)  # {1, 2, 5}
    assert metrics["test/coverage@3"] == pytest.approx(5 / 5)  # the union over both batches
    assert metrics["test/novelty@2"] == pytest.approx(((1 + 2) / 2 + (1 + info5) / 2) / 2)
    assert metrics["test/novelty@3"] == pytest.approx(((1 + 2 + log20) / 3 + (1 + info5 + log20) / 3) / 2)
    assert metrics["test/arp@2"] == pytest.approx(((10 + 5) / 2 + (10 + 4) / 2) / 2)
    assert metrics["test/arp@3"] == pytest.approx(((10 + 5 + 1) / 3 + (10 + 4 + 0) / 3) / 2)
    per_user = evaluator.per_user["test"]
    assert per_user["arp@3"].tolist() == pytest.approx([16 / 3, 14 / 3])
    # a new round starts from an empty coverage set
    again = run_round(evaluator, [user_batch(1, [1, 2, 4])])
    assert again["test/coverage@3"] == pytest.approx(3 / 5)


def test_masked_history_shortens_lists_and_only_real_recommendations_count():
    # items 1..4 are the user's history and masked: its top-3 list holds only item 5
    evaluator = RankingEvaluator([3], mask_history=True, item_popularity=COUNTS)
    metrics = run_round(evaluator, [user_batch(1, [5], seen=[1, 2, 3, 4])])
    assert metrics["test/coverage@3"] == pytest.approx(1 / 5)
    assert metrics["test/novelty@3"] == pytest.approx(-math.log2(0.2))
    assert metrics["test/arp@3"] == pytest.approx(4.0)
    ranked, valid = torch.tensor([[5, 0, 1]]), torch.tensor([[True, False, False]])
    assert list_metrics(ranked, valid, COUNTS, [3])["arp@3"].item() == pytest.approx(4.0)


def test_per_user_files_round_trip_with_dataset_ids_sorted_by_user(tmp_path):
    per_user = {
        "val": {"user": torch.tensor([3, 1]), "ndcg@10": torch.tensor([0.5, 0.25]), "hr@10": torch.tensor([1.0, 1.0])},
        "test": {"user": torch.tensor([2]), "ndcg@10": torch.tensor([0.125]), "hr@10": torch.tensor([1.0])},
    }
    paths = write_per_user(per_user, ["", "alice", "bob", "carol"], tmp_path / "per_user")
    assert paths == {
        "valid": str(tmp_path / "per_user" / "valid.parquet"),
        "test": str(tmp_path / "per_user" / "test.parquet"),
    }
    valid = pd.read_parquet(paths["valid"])
    assert list(valid.columns) == ["user_id", "user_idx", "ndcg@10", "hr@10"]
    assert valid["user_id"].tolist() == ["alice", "carol"] and valid["user_idx"].tolist() == [1, 3]
    assert valid["ndcg@10"].tolist() == [0.25, 0.5] and str(valid["ndcg@10"].dtype) == "float64"
    assert pd.read_parquet(paths["test"])["user_id"].tolist() == ["bob"]
    assert sorted(p.name for p in (tmp_path / "per_user").iterdir()) == [
        "test.parquet",
        "valid.parquet",
    ]  # no temp files
