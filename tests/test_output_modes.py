"""What a command prints: tables for a person, one JSON document for a pipeline (--json), nothing (-q), and
progress on stderr as one line per epoch when it goes to a log file."""

import json

from typer.testing import CliRunner

from recsys_cli.cli import app
from tests.conftest import TINY_MODEL

runner = CliRunner()


def test_json_quiet_and_log_lines_for_every_command(tiny, tmp_path):
    run = [*tiny, *TINY_MODEL, "trainer.enable_progress_bar=true"]

    logged = runner.invoke(app, ["train", *run, "run.name=logged"])
    assert logged.exit_code == 0, logged.output
    epochs = [line for line in logged.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]  # counted from 1, one line each
    assert all("loss " in line and "val/ndcg@10 " in line and "best " in line for line in epochs)
    assert "data: " in logged.stderr and "training: " in logged.stderr
    assert "metric" in logged.stdout  # the table, for a person

    quiet = runner.invoke(app, ["train", *run, "run.name=quiet", "-q"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""

    trained = runner.invoke(app, ["train", *run, "run.name=piped", "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)  # stdout is the document and nothing else
    assert summary["run_dir"].endswith("piped") and 0 <= summary["test"]["test/ndcg@10"] <= 1
    assert "epoch 1/2" in trained.stderr  # progress stays on stderr

    evaluated = json.loads(runner.invoke(app, ["eval", "-c", summary["run_dir"], "--json"]).stdout)
    assert evaluated["test"] == summary["test"]
    assert evaluated["output"] == str(tmp_path / "runs" / "piped" / "eval" / "metrics.json")  # inside the run
    out = tmp_path / "recs.csv"
    predicted = json.loads(
        runner.invoke(app, ["predict", "-c", summary["run_dir"], "--all-users", "-o", str(out), "--json"]).stdout
    )
    assert predicted["output"] == str(out) and predicted["rows"] == len(out.read_text().splitlines()) - 1
    processed = json.loads(runner.invoke(app, ["preprocess", *tiny, "--json"]).stdout)
    assert processed["reused"] is True and processed["path"]
    compared = json.loads(runner.invoke(app, ["compare", str(tmp_path / "runs"), "--json"]).stdout)
    assert len(compared["groups"]) == 1 and compared["groups"][0]["runs"] == 3

    sweep = runner.invoke(app, ["train", "-m", *tiny, "model=pop", "seed=1,2", "--json"])
    assert sweep.exit_code == 0, sweep.output
    assert len(json.loads(sweep.stdout)["jobs"]) == 2
