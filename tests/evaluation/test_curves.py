"""Learning curves read back from the CSV logger: one point per trained epoch, the best one where training kept it."""

import json

import pandas as pd
import pytest

from recsys_cli.config import compose_config
from recsys_cli.evaluation.curves import CURVES_FILE, best_epoch, epoch_curves, write_learning_curves
from recsys_cli.tasks import train
from tests.conftest import TINY_DATA, TINY_MODEL

PNG = b"\x89PNG\r\n\x1a\n"


def test_epochs_come_from_the_log_and_the_validation_after_fitting_is_left_out(tmp_path):
    # As Lightning's CSV logger writes it: validation, then the epoch's loss (same step), for 3 epochs with
    # validation every 2nd; then the best checkpoint validated again (no step in between) and tested.
    rows = [
        {"epoch": 0, "step": 5, "train/loss": 3.0},
        {"epoch": 1, "step": 10, "val/ndcg@10": 0.20},
        {"epoch": 1, "step": 10, "train/loss": 2.0},
        {"epoch": 2, "step": 15, "train/loss": 1.5},
        {"epoch": 3, "step": 15, "val/ndcg@10": 0.20},
        {"epoch": 3, "step": 15, "test/ndcg@10": 0.25},
    ]
    (tmp_path / "logs").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "logs" / "metrics.csv", index=False)
    curves = epoch_curves(tmp_path / "logs" / "metrics.csv", "val/ndcg@10")
    assert list(curves.index) == [1, 2, 3]
    assert list(curves["train/loss"]) == [3.0, 2.0, 1.5]
    assert curves["val/ndcg@10"].isna().tolist() == [True, False, True]
    assert best_epoch(curves, "val/ndcg@10", "max") == 2 and best_epoch(curves, "val/ndcg@10", "min") == 2
    assert best_epoch(curves, "val/hr@10", "max") is None
    assert write_learning_curves(tmp_path, "val/ndcg@10", "max").read_bytes()[:8] == PNG


def test_a_run_without_a_csv_log_has_no_curves(tmp_path):
    assert write_learning_curves(tmp_path, "val/ndcg@10", "max") is None
    assert not (tmp_path / CURVES_FILE).exists()


def test_curves_of_a_real_run_agree_with_its_metrics(workdir):
    overrides = [*workdir, *TINY_DATA, *TINY_MODEL, "trainer=debug", "trainer.max_epochs=4", "logger=csv"]
    result = train.run(compose_config([*overrides, "run.name=curves"]))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    curves = epoch_curves(result.run_dir / "logs" / "metrics.csv", "val/ndcg@10")
    assert list(curves.index) == list(range(1, metrics["epochs"] + 1))
    assert curves.notna().all().all()
    best = best_epoch(curves, "val/ndcg@10", "max")
    assert best == metrics["best_epoch"]  # the epoch best.ckpt was saved at
    assert curves.loc[best, "val/ndcg@10"] == pytest.approx(metrics["valid"]["val/ndcg@10"], abs=1e-6)
    path = write_learning_curves(result.run_dir, "val/ndcg@10", "max")
    assert path == result.run_dir / CURVES_FILE and path.read_bytes()[:8] == PNG
    assert not list(result.run_dir.glob(f".{CURVES_FILE}.*"))  # no temp file left behind
