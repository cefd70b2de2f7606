"""Train and test one RecBole 1.2.1 model under recsys's ML-100K protocol; write its numbers as JSON.

Run by `scripts/bench_recbole.sh` with the `.venv-recbole` interpreter (RecBole and recsys need different
numpy/pandas, so they live in separate virtualenvs; this file imports nothing from recsys). Protocol, as
`recsys train data=ml100k`: leave-one-out by time (`LS: valid_and_test`, `order: TO`), full ranking over
all items (`mode: full`), early stopping on validation NDCG@10 with patience 10, test metrics of the best
validation checkpoint. RecBole masks history for its general models (Pop, BPR, ItemKNN) and not for its
sequential ones; that is its own choice and we keep it, so the shell script runs recsys to match.

Two things RecBole needs on current torch: `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (it reloads its best
checkpoint with a plain `torch.load`, which torch >= 2.6 refuses for pickled configs), and switching
autograd anomaly detection off after import: `recbole/model/sequential_recommender/sine.py` calls
`torch.autograd.set_detect_anomaly(True)` at import time (every model imports it through the package),
which makes every backward pass several times slower. We switch it off for a fair comparison and record
that we did in the output (`anomaly_detection`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import torch

RECBOLE_NAMES = {
    "pop": "Pop",
    "bpr": "BPR",
    "itemknn": "ItemKNN",
    "gru4rec": "GRU4Rec",
    "sasrec": "SASRec",
    "bert4rec": "BERT4Rec",
}

# SASRec's and BERT4Rec's shared transformer settings (conf/model/sasrec.yaml, bert4rec.yaml).
TRANSFORMER = {
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 64,
    "inner_size": 256,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "train_batch_size": 256,  # RecBole's usual transformer batch (recsys trains ML-100K at 64 windows)
}

# Architecture settings set to recsys's defaults (conf/model/<name>.yaml), so each pair is the same model;
# everything else (optimiser, batch size, epochs budget) is RecBole's default unless noted.
MODEL_SETTINGS: dict[str, dict] = {
    "Pop": {},
    "BPR": {"embedding_size": 64},
    "ItemKNN": {"k": 100, "shrink": 10.0},
    "GRU4Rec": {
        "embedding_size": 64,
        "hidden_size": 128,
        "num_layers": 1,
        "dropout_prob": 0.2,
        "loss_type": "CE",
        "train_neg_sample_args": None,  # CE over all items: no sampled negatives
    },
    "SASRec": {**TRANSFORMER, "loss_type": "CE", "train_neg_sample_args": None},
    "BERT4Rec": {**TRANSFORMER, "mask_ratio": 0.2, "loss_type": "CE", "train_neg_sample_args": None},
}

PROTOCOL = {
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "stopping_step": 10,
    "MAX_ITEM_LIST_LENGTH": 50,
    "epochs": 300,
    "show_progress": False,
    "save_dataset": False,
    "save_dataloaders": False,
}


def run(model_key: str, data: Path, out_dir: Path, seed: int, use_gpu: bool) -> dict:
    # Importing the package runs sine.py's set_detect_anomaly(True); undo it before anything trains.
    import recbole.model.sequential_recommender  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.autograd.set_detect_anomaly(False)

    name = RECBOLE_NAMES[model_key]
    if not (data / f"{data.name}.inter").exists():
        raise SystemExit(f"no {data.name}.inter in {data}: pass the folder of RecBole atomic files")
    settings = {
        **PROTOCOL,
        **MODEL_SETTINGS[name],
        # RecBole reads <data_path>/<dataset>/<dataset>.inter and downloads only when that file is missing.
        "data_path": str(data.parent),
        "checkpoint_dir": str(out_dir / "saved"),
        "seed": seed,
        "reproducibility": True,
        "use_gpu": use_gpu,
    }
    start = time.perf_counter()
    config = Config(model=name, dataset=data.name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    fit_start = time.perf_counter()
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - fit_start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    wall = time.perf_counter() - start
    epochs = max(1, len(trainer.train_loss_dict))
    return {
        "model": model_key,
        "recbole_model": name,
        "test_ndcg@10": float(test["ndcg@10"]),
        "test_hr@10": float(test["hit@10"]),
        "test_mrr@10": float(test["mrr@10"]),
        "valid_ndcg@10": float(best_valid["ndcg@10"]),
        "epochs": epochs,
        "best_epoch": max(1, epochs - int(getattr(trainer, "cur_step", 0))),
        "fit_seconds": round(fit_seconds, 1),
        "seconds_per_epoch": round(fit_seconds / epochs, 2),
        "wall_seconds": round(wall, 1),
        # Linux reports ru_maxrss in KiB.
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "anomaly_detection": torch.is_anomaly_enabled(),
        "protocol": "leave-one-out by time (RecBole LS valid_and_test, TO), full ranking, "
        + ("history masked" if config["MODEL_TYPE"].name != "SEQUENTIAL" else "history not masked")
        + ", max length 50, no filters",
        "settings": {k: v for k, v in MODEL_SETTINGS[name].items()},
        "train_batch_size": int(config["train_batch_size"]),
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(RECBOLE_NAMES))
    parser.add_argument("--data", required=True, type=Path, help="folder holding <name>.inter (RecBole atomic)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (default: CPU)")
    args = parser.parse_args(argv)
    data, out = args.data.resolve(), args.out.resolve()
    work = out.parent / f"recbole_{args.model}"
    work.mkdir(parents=True, exist_ok=True)
    # RecBole writes log/ and log_tensorboard/ into the working directory: keep them in the run folder.
    os.chdir(work)
    result = run(args.model, data, work, args.seed, args.gpu)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
