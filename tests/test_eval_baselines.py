"""`recsys eval --baselines` on a recommender: popularity counted on the same training split and scored by the
same evaluator, i.e. exactly what a `model=pop` run reaches on that data."""

import json

import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.config import compose_config
from recsys_cli.tasks import train
from tests.conftest import TINY_MODEL

runner = CliRunner()


def test_recommender_baselines_equal_a_pop_run_on_the_same_data(tiny, tmp_path):
    result = runner.invoke(app, ["train", *tiny, *TINY_MODEL, "run.name=seq"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", "-c", str(tmp_path / "runs" / "seq"), "--baselines", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "against the popularity baseline (test)" in result.output and "sasrec (this checkpoint)" in result.output
    ((name, baseline),) = json.loads(out.read_text())["baselines"].items()
    assert name == "popularity (training split)"
    # trainer=debug counts 2 batches only; the baseline counts every training window, as this pop run does
    pop = train.run(compose_config([*tiny, "model=pop", "trainer.limit_train_batches=1.0", "run.name=pop"]))
    for metric in ("test/ndcg@10", "test/hr@10", "test/mrr@10", "test/coverage@10"):
        assert baseline[metric] == pytest.approx(pop.metrics["test"][metric], abs=1e-9), metric
