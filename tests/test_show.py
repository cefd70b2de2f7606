"""`recsys show` on a tiny run: what the checkpoint holds, as tables and as JSON, and one-line errors."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from recsys_cli import __version__
from recsys_cli.cli import app
from tests.conftest import TINY_MODEL

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def trained(tiny, tmp_path):
    overrides = [*tiny, *TINY_MODEL, "run.name=shown"]
    result = invoke("train", *overrides)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "shown", overrides


def test_show_a_run_folder_as_json_and_as_tables(trained, tmp_path):
    run, overrides = trained
    result = invoke("show", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert report["checkpoint"] == str(run / "checkpoints" / "best.ckpt") and report["run_dir"] == str(run)
    model = report["model"]
    assert (model["name"], model["kind"]) == ("sasrec", "recommender")
    assert model["class"] == "recsys_cli.models.sasrec.SASRec"
    assert model["settings"]["hidden_size"] == 16
    assert model["stored_weights"] == sum(t.numel() for t in checkpoint["state_dict"].values())
    assert report["data"]["name"] == "synthetic" and report["data"]["items"] == metrics["protocol"]["items"]
    assert report["protocol"] == metrics["protocol"]["description"]
    assert report["metrics"]["test"]["test/ndcg@10"] == metrics["test"]["test/ndcg@10"]
    assert report["metrics"]["valid"]["val/hr@10"] == metrics["valid"]["val/hr@10"]
    training = report["training"]
    assert training["epochs"] == metrics["epochs"] and training["best_epoch"] == metrics["best_epoch"]
    assert training["checkpoint_epoch"] == metrics["best_epoch"]  # best.ckpt holds the best epoch's weights
    assert report["config"]["data.name"] == "synthetic" and report["config"]["train.monitor"] == "val/ndcg@10"
    assert report["overrides"] == overrides
    assert report["files"]["checkpoints/best.ckpt"] == (run / "checkpoints" / "best.ckpt").stat().st_size
    files = dict(report["files"])
    assert files.pop("(whole run folder)") >= sum(files.values()) and "metrics.json" in files
    assert report["written_by"]["recsys"] == __version__

    result = invoke("show", run / "checkpoints" / "best.ckpt")
    assert result.exit_code == 0, result.output
    for text in ("sasrec (recommender) on synthetic", "key metrics", "ndcg@10", "config (resolved)", "files"):
        assert text in result.output, text


def test_a_checkpoint_alone_shows_what_it_carries(trained, tmp_path):
    run, _ = trained
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copyfile(run / "checkpoints" / "best.ckpt", alone)
    report = json.loads(invoke("show", alone, "--json").stdout)
    assert report["run_dir"] is None and report["metrics"] is None
    assert report["files"] == {"model.ckpt": alone.stat().st_size}
    assert report["training"]["checkpoint_epoch"] >= 1 and report["model"]["name"] == "sasrec"
    result = invoke("show", alone)
    assert result.exit_code == 0 and "no metrics.json beside the checkpoint" in result.output


def test_bad_paths_are_one_line_and_exit_2(tmp_path):
    not_a_checkpoint = tmp_path / "events.csv"
    not_a_checkpoint.write_text("user_id,item_id\nu1,i1\n")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path, message in [
        (tmp_path / "nothing.ckpt", "not found"),
        (tmp_path, "without checkpoints/best.ckpt"),
        (not_a_checkpoint, "not a readable checkpoint"),
        (foreign, "not a recsys checkpoint"),
    ]:
        result = invoke("show", path)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_show_a_text_checkpoint(workdir, tiny_encoder):
    from recsys_cli.config import compose_config
    from recsys_cli.tasks import train
    from tests.conftest import TINY_TEXT

    overrides = [*workdir, *TINY_TEXT, "model=bert_intent", f"model.encoder={tiny_encoder}", "model.finetune=frozen"]
    overrides += ["trainer=debug", "logger=none", "run.name=text"]
    result = train.run(compose_config(overrides), overrides=overrides)
    report = json.loads(invoke("show", result.run_dir, "--json").stdout)
    labels = torch.load(result.best_checkpoint, weights_only=True)["recsys"]["data"]["label_names"]
    assert (report["model"]["kind"], report["data"]["task"], report["data"]["labels"]) == (
        "text",
        "classification",
        len(labels),
    )
    assert "users" not in report["data"] and "items" not in report["data"]
    # a frozen encoder's checkpoint stores only what trained (the head): a small share of the model
    model = report["model"]
    assert model["trainable_parameters"] <= model["stored_weights"] < model["total_parameters"] / 20
    assert report["metrics"]["test"]["test/accuracy"] == result.metrics["test"]["test/accuracy"]
