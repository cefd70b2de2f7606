#!/usr/bin/env bash
# Two trainings side by side on this machine: torch's default threads (threads=<cores>, what every process
# took before threads=auto) against threads=auto (the cores shared), and one run alone for reference.
# Reports each run's seconds per epoch. Usage: bash scripts/bench_threads.sh [hydra overrides]
#   e.g. EPOCHS=5 bash scripts/bench_threads.sh model=sasrec data=ml100k
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS=${RECSYS:-recsys}
EPOCHS=${EPOCHS:-5}
OUT=${OUT:-runs/bench_threads}
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
ARGS=("model=sasrec" "data=ml100k" "trainer.max_epochs=$EPOCHS" "train.patience=1000" "logger=none" "$@")
rm -rf "$OUT"
one() { $RECSYS train "${ARGS[@]}" "paths.runs_dir=$OUT" "run.name=$1" "threads=$2" -q; }
spe() { python3 -c "import json,sys; print(json.load(open('$OUT/$1/metrics.json'))['seconds_per_epoch'])"; }

one alone auto
one a_fixed "$CORES" & one b_fixed "$CORES" & wait
one a_auto auto & one b_auto auto & wait
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $CORES cores; ${ARGS[*]}"
echo "| setting | run | s / epoch |"
echo "|---|---|---|"
echo "| alone, threads=auto ($CORES) | 1 | $(spe alone) |"
for setting in fixed auto; do for run in a b; do
  label=$([ $setting = fixed ] && echo "two side by side, threads=$CORES each (torch's default)" || echo "two side by side, threads=auto")
  echo "| $label | $run | $(spe ${run}_$setting) |"
done; done
