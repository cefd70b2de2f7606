"""`recsys tune`: search spaces from conf/tune, a resumable Optuna study chosen on validation only."""

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.config import compose_config, group_options, save_config, to_container
from recsys_cli.core import resume
from recsys_cli.core.resume import ResumePoint
from recsys_cli.core.run import RunInterrupted
from recsys_cli.errors import RecsysError
from recsys_cli.tasks import train
from recsys_cli.tasks import tune as task
from tests.conftest import TINY_MODEL

runner = CliRunner()


@pytest.mark.parametrize("name", group_options("tune"))
def test_every_tune_option_is_a_valid_space_for_its_model(name):
    model = name if name in group_options("model") else "sasrec"  # default.yaml: the generic space
    cfg = compose_config([f"tune={name}", f"model={model}"])
    space = task.search_space(to_container(cfg.tune.params))
    assert space and ("model.lr" in {p.key for p in space}) == (name not in ("itemknn", "ease"))  # no lr there
    task._check_space(cfg, space)  # every searched key exists in the model's config
    assert (cfg.tune.metric, cfg.tune.direction) == ("val/ndcg@10", "max")  # what picks checkpoints
    text = compose_config([f"tune={name}", "model=bert_intent"])
    assert (text.tune.metric, text.tune.direction) == (text.train.monitor, text.train.mode)
    for param in space:  # every hidden size choice is divisible by every head count
        if param.key == "model.num_heads":
            hidden = next(p for p in space if p.key == "model.hidden_size")
            assert all(h % heads == 0 for h in hidden.choices for heads in param.choices)


def test_search_space_is_flattened_and_checked():
    space = task.search_space(
        {"model": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, "seed": {"type": "int", "low": 1,
         "high": 3}, "data": {"max_len": {"type": "categorical", "choices": [20, 50]}}}
    )  # fmt: skip
    assert [(p.key, p.type) for p in space] == [("model.lr", "float"), ("seed", "int"), ("data.max_len", "categorical")]
    assert task.search_space({"model": {"lr": None, "dropout": {"type": "float", "low": 0, "high": 1}}})[0].key == (
        "model.dropout"
    )
    bad = [
        ({"lr": {"type": "uniform", "low": 0, "high": 1}}, "choose one of: float, int, categorical"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "low must be above 0"),
        ({"lr": {"type": "float", "low": 1, "high": 0}}, "low <= high"),
        ({"lr": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "step": 0.1}}, "unknown field 'step'"),
        ({"lr": 0.1}, "must be a mapping"),
    ]
    for params, message in bad:
        with pytest.raises(RecsysError, match=message):
            task.search_space(params)


def test_drawn_values_round_trip_through_overrides():
    values = {"model.lr": 1e-05, "model.hidden_size": 64, "model.lr_decay": None, "data.name": "a b's"}
    cfg = compose_config([f"{key}={task.override_value(value)}" for key, value in values.items()])
    assert cfg.model.lr == 1e-05 and cfg.model.hidden_size == 64 and cfg.model.lr_decay is None
    assert cfg.data.name == "a b's"


def fake_training(calls, resumed=None):
    """`train.run` stand-in: validation peaks at lr=0.003, test at the opposite end; dropout > 0.4 fails.
    ``resumed`` collects each call's (folder name, checkpoint resumed from)."""
    resumed = [] if resumed is None else resumed

    def run(cfg, run_dir, overrides, resume_from=None):
        calls.append(list(overrides))
        resumed.append((run_dir.name, resume_from))
        if cfg.model.dropout > 0.4:
            raise RecsysError("dropout too high for this test")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        distance = abs(cfg.model.lr - 0.003)
        metrics = {"valid": {"val/ndcg@10": 1 - distance}, "test": {"test/ndcg@10": distance}, "fit_seconds": 0.1}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return train.TrainResult(run_dir=run_dir, metrics=metrics, overrides=list(overrides))

    return run


def test_best_trial_is_chosen_on_validation_and_failed_trials_are_skipped(monkeypatch, workdir, tmp_path):
    calls = []
    monkeypatch.setattr(train, "run", fake_training(calls))
    overrides = [*workdir, "tune.sampler.kind=random", "model.hidden_size=16", "data.max_len=20"]
    result = task.run(overrides, n_trials=8, name="fake")
    assert len(calls) == 8 and all(call[: len(overrides)] == overrides for call in calls)
    assert result.pinned == ["model.hidden_size", "data.max_len"]
    done = [row for row in result.trials if row["state"] == "complete"]
    failed = [row for row in result.trials if row["state"] == "fail"]
    assert failed and all(row["model.dropout"] > 0.4 and "too high" in row["error"] for row in failed)
    best = max(done, key=lambda row: row["val/ndcg@10"])
    assert result.best["trial"] == best["trial"]
    # test peaks elsewhere: had it guided the choice, another trial would have won
    assert result.best["test"]["test/ndcg@10"] == min(row["test/ndcg@10"] for row in done)
    assert result.best["overrides"] == [f"model.lr={best['model.lr']!r}", f"model.dropout={best['model.dropout']!r}"]
    assert compose_config([*overrides, *result.best["overrides"]]).model.lr == best["model.lr"]
    saved = json.loads((tmp_path / "runs" / "tune" / "fake" / "best.json").read_text())
    assert saved["trial"] == best["trial"] and saved["command"].startswith("recsys train ")
    assert str(best["model.lr"]) in (tmp_path / "runs" / "tune" / "fake" / "best.yaml").read_text()


def test_a_configuration_drawn_again_is_not_trained_again(monkeypatch, workdir):
    calls = []
    monkeypatch.setattr(train, "run", fake_training(calls))
    lr = ["~tune.params.model.lr", "+tune.params.model.lr={type:categorical,choices:[0.001,0.003]}"]
    space = [*lr, "model.dropout=0.1", "model.hidden_size=16", "data.max_len=20"]  # lr alone is searched
    result = task.run([*workdir, "tune.sampler.kind=random", *space], n_trials=6, name="repeats")
    assert sorted({call[-1] for call in calls}) == ["model.lr=0.001", "model.lr=0.003"] and len(calls) == 2
    first = {row["model.lr"]: row for row in result.trials if row["repeat_of"] is None}
    assert len(result.trials) == 6 and len(first) == 2
    for row in result.trials:  # a repeat carries the metrics and folder of the trial that trained
        origin = first[row["model.lr"]]
        assert (row["val/ndcg@10"], row["test/ndcg@10"], row["run_dir"]) == (
            origin["val/ndcg@10"],
            origin["test/ndcg@10"],
            origin["run_dir"],
        )
        assert row["repeat_of"] in (None, origin["trial"])


def test_a_new_study_starts_from_the_configs_own_values(monkeypatch, workdir):
    monkeypatch.setattr(train, "run", fake_training([]))
    base = [*workdir, "tune.sampler.kind=random", "model.lr=0.002", "model.dropout=0.1", "model.hidden_size=48"]
    space = ["~tune.params.model.lr", "~tune.params.model.dropout", "~tune.params.model.hidden_size"]
    space += [
        "+tune.params.model.weight_decay={type:float,low:0.0,high:1.0}",
        "tune.params.data.max_len.choices=[20,40]",
    ]
    cfg = compose_config(base + space)
    searched = task.search_space(to_container(cfg.tune.params))
    assert task.config_values(cfg, searched) == {"model.weight_decay": 0.0}  # max_len 50 is not a choice: drawn
    result = task.run(base + space, n_trials=3, name="baseline")
    assert result.trials[0]["model.weight_decay"] == 0.0 and result.trials[0]["data.max_len"] in (20, 40)
    assert all(row["model.weight_decay"] != 0.0 for row in result.trials[1:])
    again = task.run([*base, *space], n_trials=1, name="baseline")  # a resumed study is not seeded again
    assert again.trials[3]["model.weight_decay"] != 0.0
    off = task.run([*base, *space, "tune.start_from_config=false"], n_trials=1, name="drawn")
    assert off.trials[0]["model.weight_decay"] != 0.0


def test_a_resumed_study_must_keep_its_goal_and_overrides(monkeypatch, workdir):
    monkeypatch.setattr(train, "run", fake_training([]))
    pinned = ["model.dropout=0.1", "tune.sampler.kind=random"]
    first = task.run([*workdir, *pinned], n_trials=2, name="resume")
    again = task.run([*workdir, *pinned], n_trials=2, name="resume")
    assert [row["trial"] for row in again.trials] == [0, 1, 2, 3]
    lrs = [row["model.lr"] for row in again.trials]
    assert len(set(lrs)) == 4 and lrs[:2] == [row["model.lr"] for row in first.trials]  # no redrawn values
    with pytest.raises(RecsysError, match=r"optimises val/ndcg@10 \(maximize\), not val/hr@10"):
        task.run([*workdir, *pinned, "tune.metric=val/hr@10"], n_trials=1, name="resume")
    with pytest.raises(RecsysError, match=r"other overrides \(\+model.num_layers=1\)"):
        task.run([*workdir, *pinned, "model.num_layers=1"], n_trials=1, name="resume")
    with pytest.raises(RecsysError, match="not a validation metric"):
        task.run([*workdir, "tune.metric=test/ndcg@10"], n_trials=1)
    with pytest.raises(RecsysError, match=r"model.lr is not a key of this config \(model=pop\)"):
        task.run([*workdir, "model=pop"], n_trials=1)


def test_tune_trains_trials_writes_the_study_and_resumes(tiny, tmp_path):
    args = ["tune", *tiny, *TINY_MODEL, "model.hidden_size=16", "--name", "tiny"]
    result = runner.invoke(app, [*args, "--trials", "2"])
    assert result.exit_code == 0, result.output
    assert "best trial" in result.output and "best overrides: model.lr=" in result.output
    folder = tmp_path / "runs" / "tune" / "tiny"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    valid = {n: json.loads((folder / f"trial_{n:03d}" / "metrics.json").read_text())["valid"] for n in (0, 1)}
    best = json.loads((folder / "best.json").read_text())
    assert best["trial"] == max(valid, key=lambda n: valid[n]["val/ndcg@10"])
    assert best["value"] == pytest.approx(valid[best["trial"]]["val/ndcg@10"])
    assert "test/ndcg@10" in best["test"]
    assert len(pd.read_csv(folder / "trials.csv")) == 2

    result = runner.invoke(app, [*args, "--trials", "1"])
    assert result.exit_code == 0, result.output
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}").trials) == 3
    assert (folder / "trial_002" / "metrics.json").exists() and len(pd.read_csv(folder / "trials.csv")) == 3


def test_compare_and_tune_help_import_nothing_heavy():
    code = (
        "import sys; from typer.testing import CliRunner; from recsys_cli.cli import app; "
        "r = [CliRunner().invoke(app, [c, '--help']) for c in ('tune', 'compare')]; "
        "assert all(x.exit_code == 0 for x in r); "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'optuna', 'scipy', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_trial_whose_process_died_is_trained_again_on_resume(monkeypatch, workdir, tmp_path):
    calls, resumed = [], []
    monkeypatch.setattr(train, "run", fake_training(calls, resumed))
    monkeypatch.setattr(task, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(task, "STALE_SECONDS", 1)
    overrides = [*workdir, "tune.sampler.kind=random", "model.dropout=0.1"]
    # A process that died mid-trial: its trial is RUNNING and its heartbeat stopped.
    url = f"sqlite:///{(tmp_path / 'runs' / 'tune' / 'died').resolve()}/study.db"
    (tmp_path / "runs" / "tune" / "died").mkdir(parents=True)
    study = optuna.create_study(study_name="died", storage=task._storage(url), direction="maximize")
    study.set_user_attr("metric", "val/ndcg@10")
    study.set_user_attr("overrides", sorted(o for o in overrides if not task.override_key(o).startswith("tune")))
    study.enqueue_trial({"model.lr": 0.0025})  # the config's own lr was the first trial
    dead = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)  # the database keeps heartbeats to the second
    result = task.run(overrides, n_trials=1, name="died")
    states = [row["state"] for row in result.trials]
    assert states == ["fail", "complete"]
    assert result.trials[1]["model.lr"] == 0.0025 and "model.lr=0.0025" in calls[0]
    assert resumed == [("trial_001", None)]  # the dead trial left no last.ckpt: trained anew


def test_a_trial_stopped_by_ctrl_c_resumes_in_its_folder_when_the_study_runs_again(monkeypatch, workdir):
    calls, resumed = [], []
    training = fake_training(calls, resumed)

    def stopped_once(cfg, run_dir, overrides, resume_from=None):
        if not calls:
            calls.append("stopped")
            (run_dir / "checkpoints").mkdir(parents=True)
            (run_dir / "checkpoints" / "last.ckpt").touch()  # epochs had finished
            raise RunInterrupted(run_dir, run_dir / "checkpoints" / "last.ckpt")
        return training(cfg, run_dir, overrides, resume_from)

    def point(folder):  # as if the stopped trial had finished epochs before Ctrl-C
        return ResumePoint(Path(folder), Path(folder) / "checkpoints" / "last.ckpt", [], 2)

    monkeypatch.setattr(train, "run", stopped_once)
    monkeypatch.setattr(resume, "resume_point", point)
    base = [*workdir, "tune.sampler.kind=random", "model.dropout=0.1"]
    with pytest.raises(RunInterrupted, match="same `recsys tune` command again"):
        task.run(base, n_trials=2, name="stopped")
    result = task.run(base, n_trials=1, name="stopped")
    assert [row["state"] for row in result.trials] == ["fail", "complete"]
    assert result.trials[0]["model.lr"] == result.trials[1]["model.lr"]
    assert resumed == [("trial_000", Path(result.trials[0]["run_dir"]) / "checkpoints" / "last.ckpt")]


def test_an_interrupted_baseline_trial_is_queued_again(monkeypatch, workdir):
    calls = []
    training = fake_training(calls)

    def interrupted(cfg, run_dir, overrides, resume_from=None):
        if not calls:
            calls.append("interrupted")
            raise KeyboardInterrupt
        return training(cfg, run_dir, overrides, resume_from)

    monkeypatch.setattr(train, "run", interrupted)
    base = [*workdir, "tune.sampler.kind=random", "model.lr=0.002", "model.dropout=0.1"]  # both pinned
    with pytest.raises(KeyboardInterrupt):
        task.run(base, n_trials=2, name="ctrl-c")
    result = task.run(base, n_trials=1, name="ctrl-c")
    assert [row["state"] for row in result.trials] == ["fail", "complete"]
    config_values = {"model.hidden_size": 64, "data.max_len": 50}  # the config's own, inside their ranges
    assert all({key: row[key] for key in config_values} == config_values for row in result.trials)
