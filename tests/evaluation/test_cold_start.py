"""Cold-start items: held out of training, reported apart with their fallback baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recsys_cli.config import compose_config
from recsys_cli.data.preprocess import TEST, TRAIN, VALID
from recsys_cli.errors import RecsysError
from recsys_cli.evaluation.cold_start import draw_cold_items, hold_out
from recsys_cli.evaluation.protocol import RankingEvaluator
from recsys_cli.families.recommender import prepare_interactions
from recsys_cli.tasks import evaluate, train


def test_the_draw_is_seeded_and_never_holds_out_padding():
    cold = draw_cold_items(100, 0.1, seed=3)
    assert cold.shape == (101,) and cold.sum() == 10 and not cold[0]
    assert np.array_equal(cold, draw_cold_items(100, 0.1, seed=3))
    assert not np.array_equal(cold, draw_cold_items(100, 0.1, seed=4))
    assert draw_cold_items(100, 0.0, seed=3).sum() == 0
    with pytest.raises(RecsysError, match="cold_start_items"):
        draw_cold_items(100, 1.5, seed=0)


def test_every_training_event_on_a_new_item_is_removed_and_nothing_else(tiny):
    processed, _ = prepare_interactions(compose_config(tiny))
    held = hold_out(processed, 0.2, seed=0)
    cold = held.cold_start["mask"]
    before, after = processed.interactions, held.interactions
    split, items = after["split"].to_numpy(), after["item_idx"].to_numpy()
    assert not (cold[items] & (split == TRAIN)).any()
    for stage in (VALID, TEST):  # held-out events all stay: new items are still targets
        assert (split == stage).sum() == (before["split"] == stage).sum()
    removed = (before["split"].to_numpy() == TRAIN) & cold[before["item_idx"].to_numpy()]
    assert len(before) - len(after) == removed.sum() == held.cold_start["info"]["removed_training_events"]
    scores = held.cold_start["baselines"]
    for name in ("cold_pop", "cold_random"):  # the baselines rank the new items only
        assert np.isfinite(scores[name]).sum() == cold.sum() and np.all(np.isfinite(scores[name][cold]))


def test_segment_metrics_count_only_the_new_targets_of_users_that_have_them():
    cold = torch.zeros(7, dtype=torch.bool)
    cold[[5, 6]] = True
    evaluator = RankingEvaluator(
        ks=[1, 2], segments={"cold": cold}, segment_baselines={"fixed": ("cold", torch.arange(7.0))}
    )
    scores = torch.tensor([[0, 9, 8, 1, 1, 7, 1], [0, 1, 2, 3, 4, 5, 6.0]])
    batch = {
        "targets": torch.tensor([[5], [2]]),  # user 0: a new item, ranked 3rd overall, 1st among the new ones
        "users": torch.tensor([1, 2]),
        "seen_rows": torch.tensor([], dtype=torch.long),
        "seen_items": torch.tensor([], dtype=torch.long),
    }
    out = evaluator._segment_metrics(torch.topk(scores, 2).indices, scores, batch)
    assert out["cold/hr@2"][0] == 0 and torch.isnan(out["cold/hr@2"][1])  # user 1 has no new target
    assert out["cold_within/hr@1"][0] == 1
    assert out["fixed/hr@1"][0] == 0 and out["fixed/hr@2"][0] == 1  # item 6 first, then 5


def test_a_run_reports_new_items_apart_and_its_checkpoint_keeps_the_setting(tiny, tmp_path):
    overrides = [*tiny, "eval.cold_start_items=0.2", "run.name=cold"]
    result = train.run(compose_config(overrides), overrides=overrides)
    test = result.metrics["test"]
    assert test["test/cold/users"] > 0
    assert {"test/cold/hr@10", "test/cold_within/hr@10", "test/cold_pop/hr@10", "test/cold_random/hr@10"} <= set(test)
    assert test["test/cold_within/hr@10"] >= test["test/cold/hr@10"]  # fewer competitors
    evaluated = evaluate.run(result.best_checkpoint, output=tmp_path / "eval.json")
    assert evaluated.metrics["test"] == pytest.approx(test, rel=1e-5, abs=1e-6)
    trained = json.loads((result.run_dir / "metrics.json").read_text())["protocol"]["cold_start"]
    assert evaluated.metrics["protocol"]["cold_start"] == trained
    with pytest.raises(RecsysError, match="held out while training"):
        evaluate.run(result.best_checkpoint, overrides=["eval.cold_start_items=0.1"], output=tmp_path / "x.json")
