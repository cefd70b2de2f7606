"""What the out-of-scope fallback does to a query-reading recommender's ranking, through `recsys predict`.

Each test user of the checkpoint's data becomes one predict row: the history before the test event, and a
query. Three queries are tried for every user: the test event's own query (the shop's words), a foreign text
drawn from another domain (e.g. BANKING77's questions: words a shop user might type that are none of the
shop's intents), and none. Each condition is predicted twice, with the model's ``oos_queries`` set to
``history`` (a query the intent model calls out of scope is dropped: the history alone) and to ``keep``, and
scored against the test item (HR@10, NDCG@10, full ranking, history not excluded: as ``recsys eval``).

    python scripts/bench_oos_fallback.py runs/<intent_sasrec run> --foreign ../shared/data/banking77/test.csv \
        --out runs/oos_fallback.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CONDITIONS = ("own query", "foreign query", "no query")
MODES = ("history", "keep")


def scores(recommended: list[list[str]], targets: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of one target per row."""
    ranks = np.array([row[:k].index(t) if t in row[:k] else -1 for row, t in zip(recommended, targets)])
    hit = ranks >= 0
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2), 0.0)
    return {f"hr@{k}": round(float(hit.mean()), 4), f"ndcg@{k}": round(float(ndcg.mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an intent_sasrec checkpoint or run folder")
    parser.add_argument("--foreign", type=Path, required=True, help="CSV of foreign texts (a `text` column)")
    parser.add_argument("--seed", type=int, default=0, help="which foreign text each user gets")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from recsys_cli.checkpoint import KEY, load_checkpoint
    from recsys_cli.config import compose_config
    from recsys_cli.core.family import PredictRequest
    from recsys_cli.data.preprocess import TEST
    from recsys_cli.data.queries import event_queries
    from recsys_cli.families.recommender import prepare_interactions, recommend
    from recsys_cli.io import atomic_write_json
    from recsys_cli.runtime import quiet_libraries

    quiet_libraries()
    checkpoint = load_checkpoint(args.checkpoint, kind="recommender")
    stored = checkpoint[KEY]
    cfg = compose_config([f"data={stored['config']['data']['name']}"])
    cfg.data = stored["config"]["data"]
    processed, _ = prepare_interactions(cfg)
    inter = processed.interactions
    queries = event_queries(inter, processed.extra)
    if queries is None:
        sys.exit(f"data={cfg.data.name} has no queries")
    texts, per_event = queries
    item_ids = np.asarray(stored["data"]["item_ids"], dtype=object)
    users = inter["user_idx"].to_numpy()
    items = inter["item_idx"].to_numpy()
    test = np.flatnonzero(inter["split"].to_numpy() == TEST)
    test = test[np.r_[True, users[test][1:] != users[test][:-1]]]  # each user's first test event
    starts = np.searchsorted(users, users[test])  # events are grouped by user, in time order
    histories = [item_ids[items[s:e]].tolist() for s, e in zip(starts, test)]
    targets = item_ids[items[test]]
    foreign = pd.read_csv(args.foreign)["text"].astype(str).to_numpy()
    drawn = np.random.default_rng(args.seed).choice(foreign, len(test))
    own = np.asarray(texts, dtype=object)[per_event[test]]
    asked = {"own query": own, "foreign query": drawn, "no query": np.full(len(test), None, dtype=object)}

    result: dict = {"checkpoint": str(args.checkpoint), "users": len(test), "foreign": str(args.foreign)}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in CONDITIONS:
            rows = pd.DataFrame({"history": histories, "query": asked[condition]})
            path = Path(tmp) / "rows.jsonl"
            rows.to_json(path, orient="records", lines=True)
            for mode in MODES:
                checkpoint["hyper_parameters"]["oos_queries"] = mode
                out = Path(tmp) / f"recs-{mode}.jsonl"
                done = recommend(checkpoint, PredictRequest(output=out, input_path=path, top_k=10, exclude_seen=False))
                recommended = pd.read_json(out, lines=True, dtype={"item_ids": object})["item_ids"]
                entry = scores([[str(i) for i in r] for r in recommended], targets.astype(str))
                entry["out of scope"] = int(done.counts.get("queries out of scope (history alone)", 0)) + int(
                    done.counts.get("queries out of scope (read as given: model.oos_queries=keep)", 0)
                )
                result.setdefault(condition, {})[mode] = entry
                print(condition, mode, entry, flush=True)
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
