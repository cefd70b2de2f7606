"""Scale benchmarks: preprocessing a large generated CSV, and batch-predict throughput.

    python scripts/bench_scale.py preprocess --rows 10000000          # wall time + peak memory
    python scripts/bench_scale.py predict --checkpoint runs/<run>/checkpoints/best.ckpt

``preprocess`` writes a CSV of ``--rows`` interactions (Zipf-popular items, users with skewed
activity, epoch-second timestamps, 1-5 ratings) into ``--workdir`` (default: a temporary folder, removed
afterwards), then runs ``recsys preprocess data=csv`` on it in a child process and reports that process's
wall time and peak resident memory. ``predict`` runs ``recsys predict --all-users`` on a checkpoint
(without one it first trains SASRec on ML-100K for a few batches: throughput does not depend on how well
the model is trained) and reports users per second. Results print as JSON; ``--output`` saves them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
RECSYS = [sys.executable, "-m", "recsys_cli"]


def generate_csv(path: Path, rows: int, seed: int = 0, chunk: int = 2_000_000) -> None:
    """Write ``rows`` synthetic interactions in chunks (memory stays flat whatever ``rows`` is)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, rows // 50), max(10, rows // 200)
    user_weights = rng.pareto(1.5, n_users) + 1
    user_weights /= user_weights.sum()
    with pacsv.CSVWriter(
        path, pa.schema([("user", pa.int64()), ("item", pa.int64()), ("ts", pa.int64()), ("rating", pa.int8())])
    ) as writer:
        for begin in range(0, rows, chunk):
            size = min(chunk, rows - begin)
            users = rng.choice(n_users, size=size, p=user_weights)
            items = np.minimum(rng.zipf(1.3, size), n_items) - 1
            items = (items * 7919) % n_items  # popular items spread over the id range
            ts = 1_500_000_000 + rng.integers(0, 3 * 365 * 86400, size)
            rating = rng.integers(1, 6, size).astype(np.int8)
            writer.write_table(pa.table({"user": users, "item": items, "ts": ts, "rating": rating}))


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024, done.stdout


def bench_preprocess(rows: int, workdir: Path) -> dict:
    csv = workdir / f"events-{rows}.csv"
    start = time.perf_counter()
    if not csv.exists():
        generate_csv(csv, rows)
    generated = time.perf_counter() - start
    seconds, peak_mb, _ = run_child(
        [
            *RECSYS,
            "preprocess",
            "--force",
            "data=csv",
            f"data.path={csv}",
            f"paths.data_dir={workdir}",
            "data.source.columns.user=user",
            "data.source.columns.item=item",
            "data.source.columns.time=ts",
            "data.source.columns.rating=rating",
        ]
    )
    meta = json.loads(next((workdir / "processed").glob("csv-*/meta.json")).read_text())
    return {
        "benchmark": "preprocess",
        "rows": rows,
        "csv_mb": round(csv.stat().st_size / 2**20, 1),
        "generate_seconds": round(generated, 1),
        "preprocess_seconds": round(seconds, 1),
        "peak_memory_mb": round(peak_mb),
        "counts": meta["counts"],
        "dropped": meta["dropped"],
    }


def bench_predict(checkpoint: Path | None, workdir: Path, batch_size: int) -> dict:
    if checkpoint is None:
        run_child(
            [
                *RECSYS,
                "train",
                "model=sasrec",
                "data=ml100k",
                "trainer=debug",
                "logger=none",
                f"paths.runs_dir={workdir}/runs",
                "run.name=bench_predict",
            ]
        )
        checkpoint = workdir / "runs" / "bench_predict" / "checkpoints" / "best.ckpt"
    from recsys_cli.tasks import predict

    predict.run(checkpoint, workdir / "warmup.jsonl", all_users=True, top_k=10, batch_size=batch_size)
    result = predict.run(checkpoint, workdir / "recs.jsonl", all_users=True, top_k=10, batch_size=batch_size)
    return {
        "benchmark": "predict",
        "checkpoint": str(checkpoint),
        "users": result.rows,
        "seconds": round(result.seconds, 3),
        "users_per_second": round(result.users_per_second),
        "batch_size": batch_size,
        "threads": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["preprocess", "predict"])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path, help="keep generated files here (default: a temp folder)")
    parser.add_argument("--output", type=Path, help="also write the result JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.what == "preprocess":
            result = bench_preprocess(args.rows, workdir)
        else:
            result = bench_predict(args.checkpoint, workdir, args.batch_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
