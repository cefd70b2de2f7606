"""Every `logger=` choice on a tiny run: files inside the run folder, offline, with the epoch metrics; a missing
optional package is one line naming the extra to install."""

import json
import sys

import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from tests.conftest import TINY_DATA, TINY_MODEL

runner = CliRunner()


def train(workdir, logger: str):
    """A tiny sasrec run (2 epochs) with ``logger``; its folder and metrics.json."""
    overrides = [*workdir, *TINY_DATA, *TINY_MODEL, "trainer=debug", f"logger={logger}", f"run.name={logger}"]
    result = runner.invoke(app, ["train", *overrides])
    assert result.exit_code == 0, result.output
    run = next(p for p in (workdir_root(workdir) / "runs").iterdir() if p.name == logger)
    return run, json.loads((run / "metrics.json").read_text())


def workdir_root(workdir):
    from pathlib import Path

    return Path(workdir[0].split("=", 1)[1]).parent


def test_list_names_every_logger():
    result = runner.invoke(app, ["list", "logger"])
    assert result.exit_code == 0, result.output
    for name in ("csv", "none", "tensorboard", "mlflow", "wandb"):
        assert name in result.output
    assert "pip install 'recsys[mlflow]'" in result.output


def test_tensorboard_writes_event_files_with_every_epochs_metrics(workdir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, metrics = train(workdir, "tensorboard")
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    ndcg = [event.value for event in events.Scalars("val/ndcg@10")]
    # one value per epoch, then the best checkpoint validated again: the value metrics.json reports
    assert len(ndcg) == metrics["epochs"] + 1
    assert ndcg[-1] == pytest.approx(metrics["valid"]["val/ndcg@10"], abs=1e-6)
    assert len(events.Scalars("train/loss")) == metrics["epochs"]


def test_mlflow_files_the_run_in_a_store_inside_the_run_folder(workdir, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run, metrics = train(workdir, "mlflow")
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])
    assert logged.info.run_name == run.name and logged.data.params["hidden_size"] == "16"
    history = client.get_metric_history(logged.info.run_id, "val/ndcg_at_10")  # MLflow allows no "@"
    assert history[-1].value == pytest.approx(metrics["valid"]["val/ndcg@10"], abs=1e-6)


def test_wandb_writes_an_offline_run_inside_the_run_folder(workdir, monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing outside the test's folder
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        run, metrics = train(workdir, "wandb")
        assert wandb.run.offline and wandb.run.name == run.name
        assert wandb.run.summary["val/ndcg@10"] == pytest.approx(metrics["valid"]["val/ndcg@10"], abs=1e-6)
    finally:
        wandb.finish()
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert next(offline.glob("run-*.wandb")).stat().st_size > 0


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_logger_package_is_one_line_naming_the_extra(name, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importlib finds no spec
    overrides = [*workdir, *TINY_DATA, "model=pop", "trainer=debug", f"logger={name}"]
    result = runner.invoke(app, ["train", *overrides])
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]  # after the data progress lines
    assert error.startswith("error:") and f"pip install 'recsys[{name}]'" in error
    assert "Traceback" not in result.output and result.output.count("error:") == 1
