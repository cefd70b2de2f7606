#!/usr/bin/env bash
# What to expect on an AVX2-only CPU, measured on this one: every job twice, once with the CPU's full instruction
# set and once capped at AVX2 (torch's kernels: ATEN_CPU_CAPABILITY=avx2; oneDNN: ONEDNN_MAX_CPU_ISA=AVX2; MKL:
# MKL_ENABLE_INSTRUCTIONS=AVX2), which is how an AVX2-only CPU (AMD Zen 2/3, Intel before Cooper Lake) computes:
# float32 only, no AVX-512, no native bf16 (precision=auto then resolves to 32-true). The cores, caches and
# clock stay this machine's, so a real AVX2 machine differs by its clock and memory; the ratio is the point.
#
# Jobs: `make demo` end to end (scripts/demo.sh), SASRec on ML-100K (5 epochs: s/epoch), two SASRec runs side by
# side (threads=auto), the intent encoder on BANKING77 (frozen features: the whole run; full fine-tuning: 20
# steps of batch 32, extrapolated to an epoch), and batch predict of BANKING77's test texts with the frozen
# model as trained (bf16 where native, else float32) and with --int8: texts/s and test accuracy.
#   bash scripts/bench_avx2.sh                 # writes runs/bench_avx2/summary.md
#   PARTS="text" bash scripts/bench_avx2.sh    # only some parts (demo, ml, text); the others' last results stay
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RECSYS:-}" ]; then
  if [ -x .venv/bin/recsys ]; then RECSYS=$PWD/.venv/bin/recsys; else RECSYS=recsys; fi
fi
OUT=${OUT:-runs/bench_avx2}
PARTS=${PARTS:-demo ml text}
part() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
BIN=$(dirname "$RECSYS")
CAP=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
ML=../shared/data/ml-100k
BANKING=../shared/data/banking77

seconds() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@" 2>/dev/null || echo "-"; }
row() { echo "| $1 | $2 | $3 |" >> "$OUT/summary.md"; }
# share of predicted top intents that match test.csv's category
accuracy() {
  python3 - "$1" "$BANKING/test.csv" <<'PY' 2>/dev/null || echo "-"
import csv, json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
truth = [r["category"] for r in csv.DictReader(open(sys.argv[2]))]
print(round(sum(r["intents"][:1] == [t] for r, t in zip(rows, truth)) / len(truth), 4))
PY
}

{
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
  echo
  echo "| job | full instruction set | capped at AVX2 |"
  echo "|---|---|---|"
} > "$OUT/summary.md"

for isa in full avx2; do
  env=(); [ $isa = avx2 ] && env=("${CAP[@]}")
  dir=$OUT/$isa; mkdir -p "$dir"
  if part demo; then  # make demo, from an empty data and runs folder
    rm -rf "$dir/demo"
    start=$(date +%s.%N)
    (cd "$dir" && mkdir -p demo && cd demo && ln -sfn ../../../../scripts scripts \
      && env "${env[@]}" PATH="$BIN:$PATH" bash scripts/demo.sh > demo.log 2>&1)
    echo "$(python3 -c "import time; print(round(time.time() - $start, 1))")" > "$dir/demo_seconds"
  fi
  if part ml && [ -d $ML ]; then
    rm -rf "$dir/sasrec" "$dir/side_a" "$dir/side_b"
    env "${env[@]}" "$RECSYS" train model=sasrec data=ml100k trainer.max_epochs=5 train.patience=100 logger=none \
      paths.runs_dir="$dir" run.name=sasrec -q
    env "${env[@]}" "$RECSYS" train model=sasrec data=ml100k trainer.max_epochs=5 train.patience=100 logger=none \
      paths.runs_dir="$dir" run.name=side_a -q &
    env "${env[@]}" "$RECSYS" train model=sasrec data=ml100k trainer.max_epochs=5 train.patience=100 logger=none \
      paths.runs_dir="$dir" run.name=side_b -q &
    wait
  fi
  if part text && [ -d $BANKING ]; then
    rm -rf "$dir/frozen" "$dir/full20"
    start=$(date +%s.%N)
    env "${env[@]}" "$RECSYS" train model=bert_intent data=banking77 model.finetune=frozen logger=none \
      paths.runs_dir="$dir" run.name=frozen -q
    echo "$(python3 -c "import time; print(round(time.time() - $start, 1))")" > "$dir/frozen_seconds"
    env "${env[@]}" "$RECSYS" train model=bert_intent data=banking77 model.finetune=full trainer.max_epochs=1 \
      trainer.limit_train_batches=20 trainer.limit_val_batches=2 trainer.limit_test_batches=2 logger=none \
      paths.runs_dir="$dir" run.name=full20 -q
    for mode in plain int8; do
      flag=(); [ $mode = int8 ] && flag=(--int8)
      env "${env[@]}" "$RECSYS" predict -c "$dir/frozen" -i $BANKING/test.csv -o "$dir/predict_$mode.jsonl" \
        "${flag[@]}" --json > "$dir/predict_$mode.json"
    done
  fi
done

row "\`make demo\` (scripts/demo.sh, data and runs from scratch), s" "$(cat $OUT/full/demo_seconds)" "$(cat $OUT/avx2/demo_seconds)"
if [ -d $ML ]; then
  row "SASRec ML-100K alone, s / epoch" "$(seconds $OUT/full/sasrec/metrics.json seconds_per_epoch)" "$(seconds $OUT/avx2/sasrec/metrics.json seconds_per_epoch)"
  row "SASRec ML-100K, two side by side (threads=auto), s / epoch" \
    "$(seconds $OUT/full/side_a/metrics.json seconds_per_epoch), $(seconds $OUT/full/side_b/metrics.json seconds_per_epoch)" \
    "$(seconds $OUT/avx2/side_a/metrics.json seconds_per_epoch), $(seconds $OUT/avx2/side_b/metrics.json seconds_per_epoch)"
fi
if [ -d $BANKING ]; then
  for mode in plain int8; do
    label="as trained (bf16 where native)"; [ $mode = int8 ] && label="--int8"
    row "bert_intent BANKING77 predict 3,080 test texts, $label: texts / s" \
      "$(seconds $OUT/full/predict_$mode.json rows_per_second)" "$(seconds $OUT/avx2/predict_$mode.json rows_per_second)"
    row "bert_intent BANKING77 predict, $label: test accuracy" \
      "$(accuracy $OUT/full/predict_$mode.jsonl)" "$(accuracy $OUT/avx2/predict_$mode.jsonl)"
  done
  row "bert_intent BANKING77 frozen (features + head, whole run), s" "$(cat $OUT/full/frozen_seconds)" "$(cat $OUT/avx2/frozen_seconds)"
  epoch() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['fit_seconds'] / 20 * 282 / 60, 1))" "$1"; }
  row "bert_intent BANKING77 full fine-tune, one epoch (282 steps of 32, from 20), min" "$(epoch $OUT/full/full20/metrics.json)" "$(epoch $OUT/avx2/full20/metrics.json)"
fi
cat "$OUT/summary.md"
