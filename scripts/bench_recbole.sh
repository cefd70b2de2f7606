#!/usr/bin/env bash
# recsys beside RecBole 1.2.1: the same models, the same protocol, the same data (MovieLens-100K atomic
# files), one table each and the wall-time ratio. Results: runs/bench_recbole/summary.json.
#
#   bash scripts/bench_recbole.sh                      # pop bpr itemknn gru4rec sasrec bert4rec
#   MODELS="pop bpr" bash scripts/bench_recbole.sh     # any subset (recsys-only models get no RecBole row)
#   DATA=/path/to/ml-100k SEED=1 bash scripts/bench_recbole.sh trainer=gpu   # extra args: recsys overrides
#
# Protocol on both sides: leave-one-out by time (RecBole `eval_args: {split: {LS: valid_and_test},
# order: TO, mode: full}`), full ranking over all items, early stopping on validation NDCG@10 with
# patience 10 (`stopping_step: 10`, `valid_metric: NDCG@10`), test HR/NDCG/MRR@10 of the best
# validation checkpoint, max length 50, no filters. RecBole masks the user's history for its general
# models (Pop, BPR, ItemKNN) and not for sequential ones, so recsys runs general models with
# `eval.mask_history=true` and sequential ones with the default (false); each row states its protocol.
# Architectures are set to recsys's defaults on the RecBole side (scripts/bench_recbole_run.py).
#
# RecBole lives in its own virtualenv (.venv-recbole; created on the first run from PyPI: torch==2.13.0
# first, the CPU wheel, then recbole==1.2.1 with numpy<2 and pandas<3, which it was written for). Two
# fixes RecBole needs on current torch, both in scripts/bench_recbole_run.py:
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (it reloads its best checkpoint with a plain torch.load), and
# torch.autograd.set_detect_anomaly(False) after import: importing RecBole's models switches anomaly
# detection on (recbole/model/sequential_recommender/sine.py), which makes training several times
# slower. We switch it off, for a fair comparison. RecBole reads DATA in place and never downloads.
#
# Known difference: RecBole's Pop counts an item at most once per training batch (recbole/model/
# general_recommender/pop.py: `item_cnt[item, :] = item_cnt[item, :] + 1` with repeated indices in a batch
# of 2048), so it ranks by a damped popularity and scores below recsys's exact counts. The split is the
# same: RecBole's and recsys's test targets agree for 939 of 943 users, validation for 938 (the rest are
# timestamp ties ordered differently).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"pop bpr itemknn gru4rec sasrec bert4rec"}
DATA=${DATA:-../shared/data/ml-100k}
OUT=${OUT:-runs/bench_recbole}
VENV=${RECBOLE_VENV:-.venv-recbole}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ -z "${RECSYS:-}" ]; then
  if [ -x .venv/bin/recsys ]; then RECSYS=.venv/bin/recsys; else RECSYS=recsys; fi
fi
GENERAL=" pop bpr itemknn ease twotower "  # models that rank without order: RecBole masks their history
RECBOLE_MODELS=" pop bpr itemknn gru4rec sasrec bert4rec "

if [ ! -f "$DATA/ml-100k.inter" ]; then
  echo "no ml-100k.inter in $DATA; set DATA=<folder with the RecBole ml-100k atomic files>" >&2
  exit 2
fi
if [ ! -f "$VENV/.installed" ]; then
  echo "creating $VENV (RecBole 1.2.1) ..."
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet torch==2.13.0
  "$VENV/bin/python" -m pip install --quiet "numpy<2" "pandas<3" recbole==1.2.1
  touch "$VENV/.installed"
fi
mkdir -p "$OUT"

seconds() { date +%s.%N; }
for model in $MODELS; do
  mask=false
  [[ "$GENERAL" == *" $model "* ]] && mask=true
  seed_arg=()
  [ -n "${SEED:-}" ] && seed_arg=("seed=$SEED")
  echo "recsys  $model (eval.mask_history=$mask) ..."
  start=$(seconds)
  if $RECSYS train model="$model" data=ml100k data.path="$DATA" eval.mask_history=$mask logger=csv \
      trainer.enable_progress_bar=false paths.runs_dir="$OUT/recsys" run.name="$model" "${seed_arg[@]}" "$@" \
      > "$OUT/recsys_$model.log" 2>&1; then
    echo "$start $(seconds)" > "$OUT/recsys_$model.wall"
  else
    echo "  recsys $model failed: see $OUT/recsys_$model.log" >&2
    rm -f "$OUT/recsys_$model.wall"
  fi
  if [[ "$RECBOLE_MODELS" == *" $model "* ]]; then
    echo "RecBole $model ..."
    start=$(seconds)
    # shellcheck disable=SC2086  # RECBOLE_ARGS is a list of options (e.g. --gpu)
    if "$VENV/bin/python" scripts/bench_recbole_run.py --model "$model" --data "$DATA" --out "$OUT/recbole_$model.json" \
        ${SEED:+--seed "$SEED"} ${RECBOLE_ARGS:-} > "$OUT/recbole_$model.log" 2>&1; then
      echo "$start $(seconds)" > "$OUT/recbole_$model.wall"
    else
      echo "  RecBole $model failed: see $OUT/recbole_$model.log" >&2
      rm -f "$OUT/recbole_$model.wall" "$OUT/recbole_$model.json"
    fi
  fi
done

"$PYTHON" - "$OUT" $MODELS <<'PY'
import json
import sys
from pathlib import Path

out, models = Path(sys.argv[1]), sys.argv[2:]


def wall(name):
    path = out / f"{name}.wall"
    if not path.exists():
        return None
    start, end = map(float, path.read_text().split())
    return round(end - start, 1)


def recsys_row(model):
    metrics_path = out / "recsys" / model / "metrics.json"
    if wall(f"recsys_{model}") is None or not metrics_path.exists():
        return None
    m = json.loads(metrics_path.read_text())
    return {
        "test_ndcg@10": round(m["test"]["test/ndcg@10"], 4),
        "test_hr@10": round(m["test"]["test/hr@10"], 4),
        "test_mrr@10": round(m["test"]["test/mrr@10"], 4),
        "valid_ndcg@10": round(m["valid"]["val/ndcg@10"], 4),
        "epochs": m["epochs"],
        "best_epoch": m["best_epoch"],
        "fit_seconds": m["fit_seconds"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "wall_seconds": wall(f"recsys_{model}"),
        "peak_memory_mb": round(m["peak_memory_mb"]),
        "protocol": m["protocol"]["description"],
    }


def recbole_row(model):
    path = out / f"recbole_{model}.json"
    if wall(f"recbole_{model}") is None or not path.exists():
        return None
    r = json.loads(path.read_text())
    # The process wall time (imports, data loading, training, test) like recsys's; RecBole's own is kept too.
    return {**r, "in_process_seconds": r["wall_seconds"], "wall_seconds": wall(f"recbole_{model}")}


rows = []
for model in models:
    rows.append({"model": model, "recsys": recsys_row(model), "recbole": recbole_row(model)})
for row in rows:
    if row["recsys"] and row["recbole"]:
        row["wall_time_ratio_recbole_over_recsys"] = round(row["recbole"]["wall_seconds"] / row["recsys"]["wall_seconds"], 2)
(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")

columns = ["test_ndcg@10", "test_hr@10", "test_mrr@10", "epochs", "best_epoch", "seconds_per_epoch", "wall_seconds", "peak_memory_mb"]
header = ["model", "NDCG@10", "HR@10", "MRR@10", "epochs", "best", "s/epoch", "wall s", "peak MB", "protocol"]
for side in ("recsys", "recbole"):
    print(f"\n{'recsys' if side == 'recsys' else 'RecBole 1.2.1'} (test metrics of the best validation checkpoint)")
    print(" | ".join(header))
    for row in rows:
        r = row[side]
        if r is None:
            print(" | ".join([row["model"], *["-"] * (len(header) - 2), "not run or failed"]))
            continue
        print(" | ".join([row["model"], *(str(r[c]) for c in columns), r["protocol"]]))
print("\nwall-time ratio (RecBole / recsys, whole process):")
for row in rows:
    ratio = row.get("wall_time_ratio_recbole_over_recsys")
    print(f"  {row['model']}: {ratio if ratio is not None else '-'}")
print(f"\nwritten: {out / 'summary.json'}")
PY
