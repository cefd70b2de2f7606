"""Reference: plain Hugging Face ``Trainer`` fine-tuning of the same encoder on the same split.

    python scripts/bench_hf_trainer.py --data ../shared/data/banking77 --epochs 6 --lr 1e-4
    python scripts/bench_hf_trainer.py --epochs 3 --lr 5e-5          # Trainer's own defaults

Same texts as ``recsys train model=bert_intent data=banking77`` (the split comes from recsys's own
BANKING77 reader and ``prepare_text_data`` with the same seed), same encoder (the packaged
all-MiniLM-L6-v2 unless --encoder), batch size, max length and epochs; ``AutoModelForSequenceClassification``
with dynamic padding (``DataCollatorWithPadding``), linear decay, the Trainer's defaults otherwise.
Prints (and with --output writes) test accuracy and macro-F1, wall time, training samples per second,
inference texts per second at --eval-batch-size, and peak memory. Needs `pip install -e '.[minilm,bench]'`.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/banking77")
    parser.add_argument("--encoder", default="minilm-packaged")
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from recsys_cli.data.text import Banking77Source, prepare_text_data
    from recsys_cli.models.encoders import quiet_transformers, resolve_encoder

    quiet_transformers()
    splits = prepare_text_data(Banking77Source(args.data), valid_ratio=0.1, seed=0)
    location = resolve_encoder(args.encoder)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=len(splits.label_names))

    def tokenized(frame):
        data = Dataset.from_dict({"text": frame["text"].tolist(), "label": frame["label"].tolist()})
        return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length), batched=True)

    train, test = tokenized(splits.train), tokenized(splits.test)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.lr,
            warmup_steps=args.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of all steps
            weight_decay=0.01,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            seed=args.seed,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            logits = trainer.predict(test.remove_columns(["text"])).predictions
        infer_seconds = time.perf_counter() - start
    predicted = np.asarray(logits).argmax(1)
    labels = splits.test["label"].to_numpy()
    result = {
        "tool": "transformers.Trainer",
        "encoder": args.encoder,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "test_accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "test_macro_f1": round(float(f1_score(labels, predicted, average="macro")), 4),
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_second": round(args.epochs * len(splits.train) / train_seconds, 1),
        "inference_texts_per_second": round(len(splits.test) / infer_seconds, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
