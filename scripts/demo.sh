#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic shop (no downloads): preprocess → train SASRec and the
# popularity baseline → evaluate the best checkpoint again → top-10 recommendations for every user.
# Run by `make demo` (which creates .venv first); with recsys on PATH it also runs alone.
# Extra arguments are Hydra overrides for both models, e.g. `bash scripts/demo.sh data.source.n_users=500`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }

step "1/5 preprocess the synthetic shop (users, items with titles, sessions opened by queries)"
recsys preprocess "$@"

step "2/5 train SASRec to early stop (full-softmax cross-entropy, full-ranking validation)"
recsys train model=sasrec run.name=demo_sasrec "$@"

step "3/5 train the popularity baseline on the same split"
recsys train model=pop run.name=demo_pop "$@"

step "4/5 evaluate SASRec's best checkpoint again (writes runs/demo_sasrec/eval/metrics.json)"
recsys eval --checkpoint runs/demo_sasrec/checkpoints/best.ckpt

step "5/5 top-10 recommendations for every user (history items excluded)"
recsys predict --checkpoint runs/demo_sasrec/checkpoints/best.ckpt --all-users --top-k 10 \
  --output runs/demo_sasrec/recommendations.jsonl
echo
head -n 2 runs/demo_sasrec/recommendations.jsonl | cut -c1-300
echo
echo "Predictions file: $(pwd)/runs/demo_sasrec/recommendations.jsonl"
