"""Nothing lost: a training process killed with SIGKILL mid-epoch resumes to the run it would have been."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.cli import app
from tests.conftest import TINY_MODEL

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

# A script that trains as `recsys train` does, but SIGKILLs its own process at one training batch: no
# handler, no cleanup, as the OOM killer or a preempted node does.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import pytorch_lightning as pl
    import recsys_cli.core.run as run

    FIT, EPOCH, BATCH = (int(a) for a in sys.argv[1:4])
    SIGNAL = getattr(signal, sys.argv[4])
    fits = [0]

    class Kill(pl.Callback):
        def on_train_start(self, trainer, module):
            fits[0] += 1

        def on_train_batch_start(self, trainer, module, batch, index):
            if fits[0] == FIT and trainer.current_epoch == EPOCH and index == BATCH:
                os.kill(os.getpid(), SIGNAL)

    build = run.build_trainer
    run.build_trainer = lambda cfg, callbacks, *a, **k: build(cfg, [*callbacks, Kill()], *a, **k)
    from recsys_cli.cli import app
    app(sys.argv[5:])
    """
)


def _kill_during(
    epoch: int, batch: int, args: list[str], fit: int = 1, signal_name: str = "SIGKILL"
) -> subprocess.CompletedProcess:
    """Run the CLI with ``args`` in a process that signals itself at ``batch`` of ``epoch`` of its ``fit``-th
    training (SIGKILL: killed outright; SIGINT: Ctrl-C)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(fit), str(epoch), str(batch), signal_name, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def _train(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture
def recipe(workdir):
    """SASRec with dropout on a tiny shop: 3 batches an epoch, 6 epochs, early stopping able to fire."""
    return [
        *workdir,
        "data=synthetic",
        "data.source.n_users=160",
        "data.source.n_categories=4",
        "data.source.items_per_category=12",
        "data.max_len=20",
        "data.batch_size=48",
        "logger=csv",
        "trainer.max_epochs=6",
        "trainer.enable_progress_bar=false",
        "train.patience=2",
        "threads=1",  # the killed run is a subprocess beside pytest: the same thread count everywhere
        *TINY_MODEL,
    ]


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(recipe, tmp_path):
    _train(["train", *recipe, "run.name=whole"])
    whole = _metrics(tmp_path / "runs" / "whole")

    killed = _kill_during(3, 1, ["train", *recipe, "run.name=killed"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    assert not (run / "metrics.json").exists()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.rglob("*.tmp")), "a half-written file was left behind"

    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output
    resumed = _metrics(run)
    assert resumed["resumed_after_epoch"] == 3
    assert resumed["epochs"] == whole["epochs"] and resumed["best_epoch"] == whole["best_epoch"]
    # Same seed, same data, CPU: the resumed run trains the same batches with the same dropout masks.
    assert resumed["valid"] == whole["valid"]
    assert resumed["test"] == whole["test"]
    log, whole_log = (pd.read_csv(r / "logs" / "metrics.csv") for r in (run, tmp_path / "runs" / "whole"))
    assert log["epoch"].tolist() == whole_log["epoch"].tolist()  # the epochs before the kill are kept
    assert not (run / "checkpoints" / "last.ckpt").exists()  # removed once finished (train.keep_last=false)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert "optimizer_states" not in best  # best.ckpt stays weights-only

    again = runner.invoke(app, ["train", "--resume", str(run)])
    assert again.exit_code == 2 and "finished" in again.output


def test_ctrl_c_says_how_to_resume(recipe, tmp_path):
    stopped = _kill_during(2, 1, ["train", *recipe, "run.name=stopped"], signal_name="SIGINT")
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "recsys train --resume" in lines[0], stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    run = tmp_path / "runs" / "stopped"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not list(run.rglob("*.tmp"))
    result = runner.invoke(app, ["train", "--resume", str(run), "trainer.max_epochs=3"])
    assert result.exit_code == 0, result.output
    assert _metrics(run)["epochs"] == 3 and _metrics(run)["resumed_after_epoch"] == 2


def test_resume_refuses_what_it_cannot_continue(recipe, tmp_path):
    missing = runner.invoke(app, ["train", "--resume", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such run folder" in missing.output
    _train(["train", *recipe, "trainer.max_epochs=1", "run.name=short", "train.resumable=false"])
    short = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "short")])
    assert short.exit_code == 2 and "finished" in short.output
    assert "Traceback" not in short.output


def test_a_killed_sweep_resumes_without_training_finished_jobs_again(recipe, tmp_path):
    sweep = ["train", "--multirun", *recipe, "trainer.max_epochs=2", "seed=1,2,3"]
    killed = _kill_during(1, 0, sweep, fit=2)  # job 1 finished, job 2 killed in its second epoch
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    root = next((tmp_path / "runs" / "multirun").iterdir())
    jobs = sorted(p for p in root.iterdir() if p.is_dir())
    assert (root / "sweep.json").is_file() and len(jobs) == 2
    assert (jobs[0] / "metrics.json").is_file() and not (jobs[1] / "metrics.json").exists()
    finished = (jobs[0] / "metrics.json").stat().st_mtime_ns

    result = runner.invoke(app, ["train", "--resume", str(root)])
    assert result.exit_code == 0, result.output
    jobs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(jobs) == 3 and all((job / "metrics.json").is_file() for job in jobs)
    assert (jobs[0] / "metrics.json").stat().st_mtime_ns == finished  # not trained again
    assert _metrics(jobs[1])["resumed_after_epoch"] == 1
    assert "resumed_after_epoch" not in _metrics(jobs[2])
    assert len((root / "summary.csv").read_text().splitlines()) == 4


def test_a_killed_intent_encoder_resumes_to_the_same_result(workdir, tiny_encoder, tmp_path):
    from recsys_cli.data.synthetic import generate_shop

    queries = generate_shop(n_users=120, n_categories=4).extra["queries"]
    table = tmp_path / "queries.csv"
    pd.DataFrame({"text": queries["query"], "label": queries["intent"]}).to_csv(table, index=False)
    recipe = [*workdir, "model=bert_intent", f"model.encoder={tiny_encoder}", "data=text_table"]
    recipe += [f"data.path={table}", "data.text.batch_size=32", "trainer.max_epochs=3", "logger=none", "threads=1"]
    _train(["train", *recipe, "run.name=whole"])
    whole = _metrics(tmp_path / "runs" / "whole")
    killed = _kill_during(1, 1, ["train", *recipe, "run.name=killed"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "killed")])
    assert result.exit_code == 0, result.output
    resumed = _metrics(tmp_path / "runs" / "killed")
    assert resumed["resumed_after_epoch"] == 1
    assert (resumed["valid"], resumed["test"]) == (whole["valid"], whole["test"])
