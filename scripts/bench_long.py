"""Time to quality on long histories: validation NDCG@10 against wall time, one curve per training recipe.

    python scripts/bench_long.py --data shop_long --minutes 12          # the synthetic shop at ML-1M's shape
    python scripts/bench_long.py --data ml100k --minutes 3              # ML-100K, histories up to 200 items
    python scripts/bench_long.py --data ml100k --recipes default cosine --minutes 3 model=hstu

Each recipe is one ``recsys train`` run (one at a time, ``threads`` fixed to the machine's cores) with
``data.max_len=200`` (``--max-len``) and a wall-clock limit of ``--minutes`` (``trainer.max_time``): fitting
stops there (or at early stopping) and the best checkpoint is tested. Recipes that decay the learning rate
to zero get ``trainer.max_epochs`` so that the decay ends near the limit: the epochs the default recipe fitted
into the same time (it runs first), scaled by the recipe's relative cost per epoch (``COST``).

Writes ``<out>/<data>/<recipe>/`` (the runs), ``<out>/<data>_curves.png`` (validation NDCG@10 against minutes,
every recipe) and ``<out>/<data>_summary.json``, and prints a Markdown table: epochs, seconds per epoch, best
validation NDCG@10 and when it was reached, the minutes to reach 97% of the best validation NDCG@10 of any
recipe (time to quality), test NDCG@10 / HR@10 of the best checkpoint. Extra arguments are
overrides for every run (``model=hstu``, ``data.batch_size=32``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEDULE = ["model.lr=0.002", "model.warmup_epochs=1", "model.lr_schedule=cosine"]
WARMUP_B32 = ["model.lr=0.002", "model.warmup_epochs=1", "data.batch_size=32"]
RECIPES: dict[str, list[str]] = {
    "default": [],  # the model's defaults: constant lr, full-softmax cross-entropy
    "cosine": SCHEDULE,  # a higher peak lr, one epoch of warm-up, cosine decay to 0 at the time limit
    "cosine_b32": [*SCHEDULE, "data.batch_size=32"],  # ... with twice the updates per epoch
    "b32": ["data.batch_size=32"],  # the default recipe with twice the updates per epoch
    "warmup_b32": WARMUP_B32,  # warm-up, no decay
    # ... with no dropout on the attention weights: attention runs as one fused kernel (a fifth less per step)
    "warmup_b32_fused": [*WARMUP_B32, "model.attn_dropout=0"],
    "gbce": [*SCHEDULE, "model.loss=gbce", "model.num_negatives=256"],  # gSASRec's loss, 256 shared negatives
    "sampled_logq": [*SCHEDULE, "model.loss=sampled", "model.sampling=popularity", "model.num_negatives=256"],
}
# Seconds per epoch relative to the default recipe (measured here: a sampled loss skips most of the catalogue,
# a smaller batch pays more per-step overhead); only used to size a decaying recipe's max_epochs.
COST = {"cosine_b32": 1.15, "gbce": 0.75, "sampled_logq": 0.75}
MONITOR = "val/ndcg@10"


def curve(run_dir: Path) -> pd.DataFrame:
    """Per epoch: wall minutes since fitting started (validation included) and validation NDCG@10."""
    frame = pd.read_csv(run_dir / "logs" / "metrics.csv")
    seconds = frame[frame["time/elapsed_s"].notna()].groupby("epoch")["time/elapsed_s"].last()
    scores = frame[frame[MONITOR].notna()].drop_duplicates("step", keep="first").groupby("epoch")[MONITOR].first()
    table = pd.DataFrame({"minutes": seconds / 60, MONITOR: scores}).dropna()
    table.index = table.index.astype(int) + 1
    return table


def train(name: str, overrides: list[str], out: Path, minutes: float, max_epochs: int | None) -> dict:
    limit = f"00:00:{int(minutes):02d}:{round((minutes % 1) * 60):02d}"
    args = [*overrides, f"trainer.max_time={limit}", f"paths.runs_dir={out}", f"run.name={name}", "--json"]
    if max_epochs:
        args.insert(len(overrides), f"trainer.max_epochs={max_epochs}")
    print(f"[{name}] recsys train {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "recsys_cli", "train", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"[{name}] failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="overrides for every run, e.g. model=hstu")
    parser.add_argument("--data", default="shop_long", help="data config (shop_long, ml100k, office, ...)")
    parser.add_argument("--minutes", type=float, default=12.0, help="wall-clock limit of each run")
    parser.add_argument("--max-len", type=int, default=200, help="data.max_len")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="tabulate recipes already run in --out again")
    options = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    common = ["model=sasrec", f"data={options.data}", f"data.max_len={options.max_len}", f"threads={cores}"]
    common += [f"seed={options.seed}", "train.patience=1000", *options.overrides]
    out = options.out / options.data
    results, curves = {}, {}
    recipes = sorted(options.recipes, key=lambda name: name != "default")  # default first: it sizes the others
    for name in recipes:
        max_epochs = None
        if name != "default" and "lr_schedule=cosine" in " ".join(RECIPES[name]):
            fitted = curves["default"] if "default" in curves else None
            per_epoch = fitted["minutes"].iloc[-1] / len(fitted) if fitted is not None else options.minutes / 10
            max_epochs = max(2, math.floor(options.minutes / (per_epoch * COST.get(name, 1.0))))
        done = out / name / "metrics.json"
        if options.reuse and done.is_file():  # a finished run of this recipe: tabulate it, train nothing
            results[name] = {**json.loads(done.read_text()), "run_dir": str(out / name)}
        else:
            results[name] = train(name, [*common, *RECIPES[name]], out, options.minutes, max_epochs)
        curves[name] = curve(Path(results[name]["run_dir"]))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rows = []
    # time to quality: the first minute at which validation reached 97% of the best any recipe reached
    target = 0.97 * max(float(table[MONITOR].max()) for table in curves.values())
    for name, table in curves.items():
        reached = table[table[MONITOR] >= target]
        axes.plot(table["minutes"], table[MONITOR], marker=".", label=name)
        best_epoch = int(table[MONITOR].idxmax())
        test = results[name]["test"]
        rows.append(
            {
                "recipe": name,
                "epochs": len(table),
                "s/epoch": round(60 * table["minutes"].iloc[-1] / len(table), 1),
                "best val NDCG@10": round(float(table[MONITOR].max()), 4),
                "at minute": round(float(table.loc[best_epoch, "minutes"]), 1),
                f"minutes to {target:.4f}": round(float(reached["minutes"].iloc[0]), 1) if len(reached) else "-",
                "test NDCG@10": round(test["test/ndcg@10"], 4),
                "test HR@10": round(test["test/hr@10"], 4),
                "overrides": " ".join(RECIPES[name]),
            }
        )
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    axes.set(xlabel="wall minutes (training + validation)", ylabel="validation NDCG@10")
    axes.set_title(f"SASRec, {options.data}, max_len {options.max_len}: {cpu}, {cores} cores", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(options.out / f"{options.data}_curves.png", dpi=110)
    summary = {"cpu": cpu, "cores": cores, "common": common, "minutes": options.minutes, "recipes": rows}
    (options.out / f"{options.data}_summary.json").write_text(json.dumps(summary, indent=2))
    columns = [key for key in rows[0] if key != "overrides"]
    print(f"cpu: {cpu}, {cores} cores; {' '.join(common)}; {options.minutes} min per recipe")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in columns) + " |")


if __name__ == "__main__":
    main()
