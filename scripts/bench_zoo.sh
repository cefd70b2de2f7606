#!/usr/bin/env bash
# Every recommender on MovieLens-100K (DATA=office: Amazon Office 2014, or any data config): leave-one-out by time, full ranking over all items, several seeds.
# Each model trains with early stopping on validation NDCG@10 under its usual protocol (general models
# -- pop, bpr, itemknn, ease, twotower -- with the user's history masked, as RecBole does; sequential ones
# without), then its best checkpoint is evaluated again under the other masking, so every model has
# numbers under both protocols. Prints one table (test NDCG@10 / HR@10 mean ± std over seeds, epochs,
# fit time, seconds per epoch, peak memory, time to evaluate all test users) and writes
# runs/bench_zoo/summary.json and summary.md.
#   MODELS="pop bpr sasrec" SEEDS="1 2 3" JOBS=2 bash scripts/bench_zoo.sh [hydra overrides for every run]
#   SUMMARY_ONLY=1 bash scripts/bench_zoo.sh     # the table of the runs already there (e.g. after re-running some)
#   DATA=office OUT=runs/bench_zoo_office SEEDS=1 bash scripts/bench_zoo.sh
# JOBS runs side by side, each with THREADS torch threads (default cores/JOBS). Needs ../shared/data/ml-100k
# (or the DATA's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RECSYS:-}" ]; then  # the project's venv (make test / make demo create it), else recsys on PATH
  if [ -x .venv/bin/recsys ]; then RECSYS=$PWD/.venv/bin/recsys; else RECSYS=recsys; fi
fi
MODELS=${MODELS:-"pop bpr itemknn ease twotower gru4rec sasrec bert4rec hstu"}
SEEDS=${SEEDS:-"1 2 3"}
JOBS=${JOBS:-1}
DATA=${DATA:-ml100k}
OUT=${OUT:-runs/bench_zoo}
THREADS=${THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))}  # torch threads per run
mkdir -p "$OUT"
export RECSYS OUT THREADS DATA
EXTRA="$*"
export EXTRA

one_run() {
  local model=$1 seed=$2 masked=true other=false
  case $model in pop | bpr | itemknn | ease | twotower) ;; *) masked=false other=true ;; esac
  local name=${model}_s${seed}
  OMP_NUM_THREADS=$THREADS $RECSYS train model="$model" data="$DATA" seed="$seed" eval.mask_history=$masked \
      logger=csv trainer.enable_progress_bar=false paths.runs_dir="$OUT" run.name="$name" $EXTRA > "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=$THREADS $RECSYS eval --checkpoint "$OUT/$name/checkpoints/best.ckpt" eval.mask_history=$other \
      --output "$OUT/$name/eval/other_masking.json" >> "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=$THREADS $RECSYS eval --checkpoint "$OUT/$name/checkpoints/best.ckpt" \
      --output "$OUT/$name/eval/same_masking.json" >> "$OUT/$name.log" 2>&1
  echo "done $name"
}
export -f one_run

if [ "${SUMMARY_ONLY:-0}" != 1 ]; then  # SUMMARY_ONLY=1: tabulate the runs already in $OUT, train nothing
  # Stopping the script (Ctrl-C, kill) stops its runs too: xargs and its workers share our process group.
  # The runs go in the background because bash runs a trap only once the foreground job is done.
  trap 'trap - INT TERM; kill 0' INT TERM
  for model in $MODELS; do for seed in $SEEDS; do echo "$model $seed"; done; done \
    | xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1"' &
  wait $!
  trap - INT TERM
fi

python - "$OUT" "$MODELS" "$SEEDS" "$THREADS" <<'PY'
import json
import os
import re
import statistics
import sys
from pathlib import Path

out, models, seeds, threads = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]


def mean_std(values, digits=4):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


rows = []
for model in models:
    runs = []
    for seed in seeds:
        run = out / f"{model}_s{seed}"
        if not (run / "metrics.json").exists():
            continue
        train = json.loads((run / "metrics.json").read_text())
        same = json.loads((run / "eval" / "same_masking.json").read_text())
        other = json.loads((run / "eval" / "other_masking.json").read_text())
        by_mask = {same["protocol"]["mask_history"]: same, other["protocol"]["mask_history"]: other}
        runs.append({"train": train, "masked": by_mask[True], "unmasked": by_mask[False]})
    if not runs:
        rows.append({"model": model, "runs": 0})
        continue
    row = {"model": model, "runs": len(runs), "trained_with_history_masked": runs[0]["train"]["protocol"]["mask_history"]}
    for protocol in ("unmasked", "masked"):
        for metric in ("ndcg@10", "hr@10"):
            row[f"{protocol} test {metric}"] = mean_std([r[protocol]["test"][f"test/{metric}"] for r in runs])
    row["epochs"] = " / ".join(str(r["train"]["epochs"]) for r in runs)
    row["fit s"] = mean_std([r["train"]["fit_seconds"] for r in runs], digits=1)
    row["s/epoch"] = f"{statistics.mean(r['train']['seconds_per_epoch'] for r in runs):.2f}"
    row["peak MB"] = round(max(r["train"]["peak_memory_mb"] for r in runs))
    row["eval all test users s"] = f"{statistics.mean(r['masked']['seconds']['test'] for r in runs):.3f}"
    row["max len"] = runs[0]["masked"]["protocol"]["max_len"]  # a model input (a recipe may set it), not the protocol
    description = runs[0]["masked"]["protocol"]["description"].replace("history masked, ", "")
    row["protocol"] = re.sub(r", max length \d+", "", description)
    rows.append(row)

(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
columns = [c for c in rows[0] if c not in ("protocol", "trained_with_history_masked")]
lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
threads = "each run's own" if os.environ.get("SUMMARY_ONLY") == "1" else threads
lines.append(f"\n{threads} torch thread(s) per run; protocol: {rows[0].get('protocol', '')}")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
