"""End to end through the real `recsys` entry point on a tiny synthetic shop."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from tests.conftest import TINY_MODEL

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_preprocess_train_eval_predict(tiny, tmp_path):
    result = invoke("preprocess", *tiny)
    assert result.exit_code == 0, result.output
    assert "interactions" in result.output and "written" in result.output
    assert "reused" in invoke("preprocess", *tiny).output

    result = invoke("train", *tiny, *TINY_MODEL, "run.name=e2e")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "e2e"
    assert not (run / "checkpoints/last.ckpt").exists()  # the resume state goes once the run has finished
    for name in ("config.yaml", "metrics.json", "checkpoints/best.ckpt"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["test/ndcg@10"] <= 1
    assert metrics["protocol"]["ranking"] == "full" and metrics["protocol"]["split"] == "leave_one_out"
    assert "protocol:" in result.output

    result = invoke("eval", "--checkpoint", run / "checkpoints/best.ckpt")
    assert result.exit_code == 0, result.output
    again = json.loads((run / "eval" / "metrics.json").read_text())
    assert again["same_data_as_training"] is True
    # eval covers every user; training used trainer=debug but the eval set here fits in the first batches
    assert again["test"]["test/ndcg@10"] == pytest.approx(metrics["test"]["test/ndcg@10"], abs=1e-6)

    users = tmp_path / "users.csv"
    pd.DataFrame({"user_id": ["u00001", "u00002", "nobody"]}).to_csv(users, index=False)
    out = tmp_path / "recs.jsonl"
    result = invoke(
        "predict", "--checkpoint", run / "checkpoints/best.ckpt", "--input", users, "--output", out, "--top-k", 5
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == ["u00001", "u00002", "nobody"]
    assert all(len(r["item_ids"]) == 5 and len(r["titles"]) == 5 for r in rows)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)
    assert "popularity fallback" in result.output

    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"history": [rows[0]["item_ids"][0], "not-an-item"]}) + "\n")
    out_parquet = tmp_path / "recs.parquet"
    result = invoke("predict", "-c", run / "checkpoints/best.ckpt", "-i", histories, "-o", out_parquet, "-k", 3)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out_parquet)
    assert len(table.loc[0, "item_ids"]) == 3
    assert rows[0]["item_ids"][0] not in list(table.loc[0, "item_ids"])  # seen items are excluded
    assert "unknown items dropped" in result.output


def test_multirun_sweep_writes_one_folder_per_job_and_a_summary(tiny, tmp_path):
    result = invoke("train", "--multirun", *tiny, "model=pop,sasrec", "seed=1,2")
    assert result.exit_code == 0, result.output
    sweep = next((tmp_path / "runs" / "multirun").iterdir())
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 4 and set(summary["model"]) == {"pop", "sasrec"}
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 4
    assert "sweep summary" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "model=nosuchmodel"], "unknown model 'nosuchmodel'; choose one of"),
        (["train", "data=nosuchdata"], "unknown data 'nosuchdata'"),
        (["train", "trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch'"),
        (["preprocess", "data=csv"], "data.path is required"),
        (["preprocess", "data=csv", "data.path=/no/such/file.csv"], "does not exist"),
        (["eval", "--checkpoint", "/no/such.ckpt"], "not found"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, workdir):
    result = invoke(*args, *workdir) if args[0] != "eval" else invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_checkpoints_and_arguments_exit_2(tmp_path, tiny):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    result = invoke("eval", "--checkpoint", corrupt)
    assert result.exit_code == 2 and "not a readable checkpoint" in result.output
    table = tmp_path / "events.csv"  # a CSV given as the checkpoint (torch raised IndexError on it)
    table.write_text("user_id,item_id\nu1,i1\n")
    result = invoke("eval", "--checkpoint", table)
    assert result.exit_code == 2 and "not a readable checkpoint" in result.output and "Traceback" not in result.output
    result = invoke("eval", "--checkpoint", tmp_path)  # a folder that is no run folder
    assert result.exit_code == 2 and "without checkpoints/best.ckpt" in result.output
    import torch

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    result = invoke("predict", "-c", foreign, "--all-users", "-o", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "not a recsys checkpoint" in result.output
    result = invoke("predict", "-c", foreign, "--all-users", "-o", tmp_path / "x.jsonl", "--top-k", 0)
    assert result.exit_code == 2 and "--top-k must be at least 1" in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_missing_column_in_csv_data(tmp_path, workdir):
    events = tmp_path / "events.csv"
    pd.DataFrame({"user": [1, 2], "item": [3, 4], "timestamp": [1, 2]}).to_csv(events, index=False)
    result = invoke("preprocess", *workdir, "data=csv", f"data.path={events}")
    assert result.exit_code == 2
    assert "column 'user_id' (user) not found" in result.output and "data.source.columns.user" in result.output


def test_help_and_argument_errors_do_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from recsys_cli.cli import app; "
        "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0 and '--install-completion' in r.output; "
        "r = CliRunner().invoke(app, ['show', '--help']); assert r.exit_code == 0; "
        "env = {'_RECSYS_COMPLETE': 'complete_bash', 'COMP_WORDS': 'recsys train model=sa', 'COMP_CWORD': '2'}; "
        "r = CliRunner().invoke(app, [], env=env, prog_name='recsys'); assert r.output == 'model=sasrec\\n', r.output; "
        "r = CliRunner().invoke(app, ['predict', '--top-k', '0']); "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("recsys ")


def test_tables_written_to_a_file_or_pipe_are_not_cut_at_80_columns(monkeypatch):
    import io

    from recsys_cli import render

    monkeypatch.delenv("COLUMNS", raising=False)
    assert render._width(io.StringIO()) == render.FILE_WIDTH
    monkeypatch.setenv("COLUMNS", "120")
    assert render._width(io.StringIO()) is None  # rich reads COLUMNS itself


def test_eval_takes_a_run_folder_for_its_best_checkpoint(tiny, tmp_path):
    from recsys_cli.config import compose_config
    from recsys_cli.tasks import train

    result = train.run(compose_config([*tiny, "model=pop", "run.name=pop"]))
    out = tmp_path / "eval.json"
    done = invoke("eval", "--checkpoint", result.run_dir, "--output", out)
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["test"]["test/ndcg@10"] == pytest.approx(result.metrics["test"]["test/ndcg@10"])


def test_a_latin_1_csv_is_read_and_a_missing_gpu_is_one_line(workdir, tmp_path):
    import torch

    table = tmp_path / "latin.csv"
    table.write_bytes(b"user_id,item_id,timestamp\nu1,caf\xe9,1\nu1,b,2\nu1,c,3\nu2,caf\xe9,1\nu2,b,2\nu2,c,4\n")
    columns = ["data.source.columns.user=user_id", "data.source.columns.item=item_id"]
    columns += ["data.source.columns.time=timestamp", "data.preprocess.min_user_interactions=0"]
    columns += ["data.preprocess.min_item_interactions=0"]
    result = invoke("preprocess", "data=csv", f"data.path={table}", *columns, *workdir)
    assert result.exit_code == 0, result.output
    if not torch.cuda.is_available():
        result = invoke("train", "model=pop", "trainer=gpu", "data.source.n_users=50", *workdir)
        assert result.exit_code == 2 and "no usable CUDA GPU" in result.output
        assert "Traceback" not in result.output


def test_list_shows_every_choice_of_every_group_with_a_line():
    from recsys_cli.config import LISTED_GROUPS, describe_options, group_options

    result = invoke("list")
    assert result.exit_code == 0, result.output
    for group in LISTED_GROUPS:
        assert f"{group}=" in result.output
        rows = describe_options(group)
        assert [name for name, _ in rows] == group_options(group)
        assert all(description for _, description in rows)  # every YAML opens with what it is
    assert "BERT4Rec (Sun et al. 2019)" in dict(describe_options("model"))["bert4rec"]
    bad = invoke("list", "nope")
    assert bad.exit_code == 2 and "unknown config group" in bad.output


def test_tab_completes_config_choices_in_every_shell():
    from recsys_cli.config import complete_override

    assert complete_override([], "model=sa") == ["model=sasrec"]  # zsh, fish: one word
    assert complete_override(["model", "="], "b") == ["bert4rec", "bert_intent", "bert_rating", "bpr"]  # bash
    assert "logger=tensorboard" in complete_override(["data=ml100k"], "logger=")
    assert complete_override([], "seed=4") == [] and complete_override([], "mod") == []


def test_every_command_help_shows_a_worked_example():
    for command in ("list", "preprocess", "train", "eval", "predict", "compare", "tune", "show"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "E.g. `recsys " in result.output, command
