"""Two-process DDP on the CPU (gloo): one run folder, and metrics equal to a single-process evaluation.

The run uses sampled ranking, so it also checks that a user's negatives do not depend on the process
that scores it, and that coverage (a set over all users) is the union over both processes.
"""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch.distributed

from recsys_cli.tasks import evaluate
from tests.conftest import TINY_DATA, TINY_MODEL


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_on_two_cpu_processes_matches_single_process_evaluation(tmp_path):
    args = [
        "train",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        *TINY_DATA,
        "data.source.n_users=151",  # an odd number of users: the distributed sampler pads a shard
        "data.eval_batch_size=16",
        *TINY_MODEL,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "eval.ranking=sampled",
        "eval.num_negatives=20",
    ]
    done = subprocess.run([sys.executable, "-m", "recsys_cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # the worker wrote into rank 0's folder
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    again = evaluate.run(runs[0] / "checkpoints" / "best.ckpt", output=tmp_path / "eval.json").metrics
    assert metrics["protocol"]["users"] % 2 == 1
    for split in ("valid", "test"):
        assert set(again[split]) == set(metrics[split])  # accuracy, coverage, novelty and ARP @K
        for name, value in metrics[split].items():
            assert again[split][name] == pytest.approx(value, abs=1e-6), name
        # every evaluated user exactly once in the per-user file, although the sampler padded a shard
        frame = pd.read_parquet(metrics["per_user"][split])
        assert frame["user_idx"].is_unique
        assert (
            frame["user_idx"].tolist()
            == pd.read_parquet(tmp_path / "per_user" / f"{split}.parquet")["user_idx"].tolist()
        )
