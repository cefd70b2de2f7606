"""Damaged files on disk: a truncated or edited processed folder, checkpoint or cache is one line, never a
traceback; a processed folder (a cache of the raw data) is built again."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from tests.conftest import TINY_MODEL

runner = CliRunner()


def _truncate(path: Path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _processed(tmp_path: Path, *parts: str) -> Path:
    return next((tmp_path / "data" / "processed").joinpath(*parts).glob("*-*"))


def test_a_damaged_processed_folder_is_built_again_and_a_damaged_checkpoint_is_one_line(tiny, tmp_path):
    assert runner.invoke(app, ["train", *tiny, *TINY_MODEL, "run.name=first"]).exit_code == 0
    folder = _processed(tmp_path)
    _truncate(folder / "interactions.parquet")

    again = runner.invoke(app, ["train", *tiny, *TINY_MODEL, "run.name=second"])
    assert again.exit_code == 0, again.output
    assert "damaged" in again.output and "building it again" in again.output
    # eval reads the checkpoint's processed folder: damaged again, it is rebuilt from the raw data too
    _truncate(folder / "users.parquet")
    evaluated = runner.invoke(app, ["eval", "-c", str(tmp_path / "runs" / "second")])
    assert evaluated.exit_code == 0, evaluated.output

    best = tmp_path / "runs" / "second" / "checkpoints" / "best.ckpt"
    _truncate(best, keep=best.stat().st_size // 2)
    for command in (
        ["eval", "-c", str(best)],
        ["predict", "-c", str(best), "--all-users", "-o", str(tmp_path / "o.csv")],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("damage", ["texts.parquet", "labels.json"])
def test_a_damaged_processed_text_folder_is_built_again(damage, workdir, tiny_encoder, tmp_path):
    import pandas as pd

    table = tmp_path / "texts.csv"
    texts = [f"where is my card number {i}" for i in range(40)] + [f"refund for order {i}" for i in range(40)]
    pd.DataFrame({"text": texts, "label": ["card"] * 40 + ["refund"] * 40}).to_csv(table, index=False)
    run = [*workdir, "model=bert_intent", f"model.encoder={tiny_encoder}", "data=text_table"]
    run += [f"data.path={table}", "trainer=debug", "logger=none"]
    assert runner.invoke(app, ["train", *run, "run.name=a"]).exit_code == 0
    _truncate(_processed(tmp_path, "text") / damage, keep=20)
    again = runner.invoke(app, ["train", *run, "run.name=b"])
    assert again.exit_code == 0, again.output
    assert "damaged" in again.output


# A process that SIGKILLs itself in the middle of writing: after the first predict batch is written, or
# after the second table of a processed folder.
KILL_MID_WRITE = """
import os, signal, sys
import pandas as pd
from recsys_cli import predict

calls = [0]

def killing(original, after):
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped

predict.RecommendationWriter.write = killing(predict.RecommendationWriter.write, 1)
pd.DataFrame.to_parquet = killing(pd.DataFrame.to_parquet, 2)
from recsys_cli.cli import app
app(sys.argv[1:])
"""


def _killed_mid_write(args: list[str]):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, *args],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )


def _debris(folder: Path) -> list[Path]:
    return [path for path in folder.rglob(".*") if ".tmp" in path.name or path.is_dir()]


def test_killed_preprocess_and_predict_leave_no_partial_output(tiny, tmp_path):
    import signal

    killed = _killed_mid_write(["preprocess", *tiny])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    processed = tmp_path / "data" / "processed"
    assert not [p for p in processed.iterdir() if not p.name.startswith(".")]  # no folder under its real name
    assert _debris(processed)  # the half-built folder is hidden under a temporary name
    again = runner.invoke(app, ["preprocess", *tiny])
    assert again.exit_code == 0, again.output
    assert "interrupted" in again.output and "removed" in again.output  # says what it cleaned up
    assert not _debris(processed)

    assert runner.invoke(app, ["train", *tiny, *TINY_MODEL, "run.name=r"]).exit_code == 0
    out = tmp_path / "out" / "recs.jsonl"
    run = str(tmp_path / "runs" / "r")
    killed = _killed_mid_write(["predict", "-c", run, "--all-users", "--batch-size", "16", "-o", str(out)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() and _debris(out.parent)
    again = runner.invoke(app, ["predict", "-c", run, "--all-users", "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert "interrupted" in again.output and not _debris(out.parent)
    clean = tmp_path / "clean.jsonl"
    assert runner.invoke(app, ["predict", "-c", run, "--all-users", "-o", str(clean)]).exit_code == 0
    assert out.read_text() == clean.read_text()  # whole, as a run never interrupted writes it
