#!/usr/bin/env bash
# SASRec and Pop on MovieLens-100K: leave-one-out, full ranking over all items, history not masked
# (RecBole's protocol for sequential models). Prints test NDCG@10 / HR@10 of the best validation
# checkpoint, epochs, wall time, seconds per epoch and peak memory, and writes them to
# runs/bench_ml100k/summary.json. Extra arguments are Hydra overrides for both runs
# (e.g. `seed=1`, `trainer=gpu`). Needs ../shared/data/ml-100k or data.path=<folder with ml-100k.inter>.
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS=${RECSYS:-recsys}
OUT=runs/bench_ml100k
mkdir -p "$OUT"

for model in pop sasrec; do
  start=$(date +%s.%N)
  $RECSYS train model=$model data=ml100k logger=csv trainer.enable_progress_bar=false \
      paths.runs_dir="$OUT" run.name=$model "$@"
  echo "$start $(date +%s.%N)" > "$OUT/$model.wall"
done

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for model in ("pop", "sasrec"):
    m = json.loads((out / model / "metrics.json").read_text())
    start, end = map(float, (out / f"{model}.wall").read_text().split())
    wall = end - start
    rows.append({
        "model": model,
        "test_ndcg@10": round(m["test"]["test/ndcg@10"], 4),
        "test_hr@10": round(m["test"]["test/hr@10"], 4),
        "valid_ndcg@10": round(m["valid"]["val/ndcg@10"], 4),
        "epochs": m["epochs"],
        "best_epoch": m["best_epoch"],
        "fit_seconds": m["fit_seconds"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "process_wall_seconds": round(wall, 1),
        "peak_memory_mb": round(m["peak_memory_mb"]),
        "protocol": m["protocol"]["description"],
    })
(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
for row in rows:
    print(json.dumps(row))
PY
