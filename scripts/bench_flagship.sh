#!/usr/bin/env bash
# The flagship (model=intent_sasrec) against ID-only SASRec, several seeds, full ranking, leave-one-out:
#   office      Amazon Office 2014: SASRec vs text+ID (fusion=add) vs text only (fusion=text)
#   cold        Office with 10% of the items held out of training (eval.cold_start_items=0.1): text+ID and
#               text only on test targets that are new items, beside the new-item baselines in their metrics
#   synthetic   the embedded shop: SASRec vs item text (no queries) vs query intent (ID items) vs both, and Pop;
#               targets that open a session and targets that continue one are reported apart; then the
#               query-reading models' checkpoints evaluated with no history at all (eval.query_only=true)
#   ml100k      MovieLens-100K: SASRec vs text-aware SASRec (titles, year and genres)
#   intent      the synthetic shop's queries read by a fine-tuned intent encoder: bert_intent (MiniLM) trained
#               on the shop's session queries, then intent_sasrec reading them through it (model.intent_checkpoint);
#               compare with the synthetic experiment's text_query (queries read by the frozen MiniLM)
#   reviews     Amazon All Beauty 2018 (no item text): SASRec vs the same model conditioned on each user's latest
#               earlier review (model.fusion=id: the words are the users' only text here), and Pop
#   tuning      Office, frozen vs tuned text encoder: each seed's frozen text+ID model, then continued for
#               TUNE_EPOCHS epochs from its best weights (model.init_from) with the encoder frozen (the
#               control: more epochs alone), its top layer tuned (text_tuning=top) or LoRA on it (text_tuning=lora)
# Each experiment ends with `recsys compare` against SASRec (paired t-test on per-user test NDCG@10, Holm),
# saved as runs/bench_flagship/<experiment>/compare.{md,json,png}.
#   EXPERIMENTS="office synthetic" SEEDS="1 2 3" bash scripts/bench_flagship.sh [hydra overrides for every run]
# Runs one training at a time (two on 2 cores oversubscribe them). Needs ../shared/data for office and ml100k.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RECSYS:-}" ]; then  # the project's venv (make test / make demo create it), else recsys on PATH
  if [ -x .venv/bin/recsys ]; then RECSYS=$PWD/.venv/bin/recsys; else RECSYS=recsys; fi
fi
EXPERIMENTS=${EXPERIMENTS:-"office cold synthetic ml100k"}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-runs/bench_flagship}
EXTRA=("$@")

# One configuration per line: "<label> <overrides...>".
configurations() {
  case $1 in
    office) printf '%s\n' "sasrec model=sasrec data=office" \
      "text_id model=intent_sasrec data=office" \
      "text model=intent_sasrec data=office model.fusion=text" ;;
    cold) printf '%s\n' "text_id model=intent_sasrec data=office eval.cold_start_items=0.1" \
      "text model=intent_sasrec data=office model.fusion=text eval.cold_start_items=0.1" ;;
    synthetic) printf '%s\n' "sasrec model=sasrec" \
      "item_text model=intent_sasrec model.query_conditioning=none" \
      "query model=intent_sasrec model.fusion=id model.query_dropout=0.5" \
      "text_query model=intent_sasrec" \
      "pop model=pop" ;;
    ml100k) printf '%s\n' "sasrec model=sasrec data=ml100k" "text_id model=intent_sasrec data=ml100k" ;;
    intent) printf '%s\n' "bert_intent model=bert_intent" \
      "text_query model=intent_sasrec model.intent_checkpoint={folder}/bert_intent_s{seed}" ;;
    reviews) local beauty="data=amazon_reviews data.path=../shared/data/amazon-reviews-2018/All_Beauty_5.json"
      printf '%s\n' "sasrec model=sasrec $beauty" "reviews model=intent_sasrec model.fusion=id $beauty" \
        "pop model=pop $beauty" ;;
    tuning) local more="model=intent_sasrec data=office model.init_from={folder}/frozen_s{seed} data.batch_size=256"
      more+=" trainer.max_epochs=${TUNE_EPOCHS:-5}"
      printf '%s\n' "frozen model=intent_sasrec data=office" "frozen_more $more" \
        "top $more model.text_tuning=top" "lora $more model.text_tuning=lora" ;;
    *) echo "unknown experiment $1 (office, cold, synthetic, ml100k, intent, reviews, tuning)" >&2; exit 2 ;;
  esac
}

for experiment in $EXPERIMENTS; do
  folder=$OUT/$experiment
  mkdir -p "$folder"
  while read -r label overrides; do
    for seed in $SEEDS; do
      name=${label}_s$seed
      run_overrides=${overrides//\{seed\}/$seed}
      run_overrides=${run_overrides//\{folder\}/$folder}
      if [ -f "$folder/$name/metrics.json" ]; then echo "have $experiment/$name"; continue; fi
      # shellcheck disable=SC2086  # the overrides are words
      /usr/bin/time -v "$RECSYS" train $run_overrides seed="$seed" logger=csv trainer.enable_progress_bar=false \
        paths.runs_dir="$folder" run.name="$name" "${EXTRA[@]}" > "$folder/$name.log" 2> "$folder/$name.time" \
        || { echo "FAILED $experiment/$name (see $folder/$name.log)"; continue; }
      echo "done $experiment/$name: $(grep -h 's/epoch' "$folder/$name.log")"
      if [[ $experiment == synthetic || $experiment == intent ]] && [[ $overrides == *intent_sasrec* ]]; then
        "$RECSYS" eval --checkpoint "$folder/$name/checkpoints/best.ckpt" eval.query_only=true \
          --output "$folder/$name/eval/query_only.json" >> "$folder/$name.log" 2>&1
      fi
    done
  done < <(configurations "$experiment")
  baseline=sasrec metrics=test/ndcg@10,test/hr@10,val/ndcg@10 runs=("$folder")
  case $experiment in
    cold) baseline=$folder/text_s${SEEDS%% *}
      metrics=test/cold/hr@10,test/cold/ndcg@10,test/cold_within/hr@10,test/cold_pop/hr@10,test/cold_random/hr@10,test/ndcg@10 ;;
    intent) baseline=sasrec  # the recommenders of this experiment beside the synthetic experiment's (run it first)
      runs=("$folder/text_query_s*" "$OUT/synthetic/sasrec_s*" "$OUT/synthetic/text_query_s*")
      metrics=test/ndcg@10,test/new_session/ndcg@10,test/same_session/ndcg@10,val/ndcg@10 ;;
    synthetic) metrics=test/ndcg@10,test/new_session/ndcg@10,test/same_session/ndcg@10,test/hr@10,val/ndcg@10 ;;
    tuning) baseline=$folder/frozen_more_s${SEEDS%% *} ;;
  esac
  COLUMNS=200 "$RECSYS" compare "${runs[@]}" --baseline "$baseline" --metrics "$metrics" \
    --plot "$folder/compare.png" --output "$folder/compare.json" > "$folder/compare.md" 2>&1 || true
  cat "$folder/compare.md"
done
