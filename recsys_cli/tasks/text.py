"""Train, evaluate and apply text models (`model=bert_intent`, `model=bert_rating`).

The same commands, run folders, checkpoints and early stopping as the recommenders; what differs is the
data (texts with labels from ``data.text``), the model family and the metrics (accuracy, macro-F1, or
RMSE/MAE). A checkpoint is of kind ``text`` and carries its label names and the encoder's snapshot, so
``recsys eval`` and ``recsys predict`` need nothing but the file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from recsys_cli.config import to_container
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_write_json

KIND = "text"
MODEL_CONFIG_KEYS_NOT_ARGUMENTS = ("name", "recipe", "init_from")


def text_config(cfg: DictConfig) -> DictConfig:
    text = cfg.data.get("text")
    if text is None:
        raise RecsysError(
            f"data={cfg.data.name} has no texts for model={cfg.model.name}; use a text dataset "
            "(data=banking77, clinc150, amazon_reviews, text_table or synthetic)."
        )
    return text


def load_text_splits(cfg: DictConfig, label_names: list[str] | None = None) -> Any:
    """The configured text source, cleaned and split (see :func:`recsys_cli.data.text.prepare_text_data`)."""
    from recsys_cli.config import build
    from recsys_cli.data.text import prepare_text_data

    text = text_config(cfg)
    source = build(text.source, f"the text source of data={cfg.data.name}", "check the data.text.source keys.")
    return prepare_text_data(
        source,
        task="regression" if cfg.model.get("task") == "regression" else "classification",
        valid_ratio=float(text.valid_ratio),
        test_ratio=float(text.test_ratio),
        seed=int(text.split_seed),
        dedupe=bool(text.dedupe),
        label_names=label_names,
    )


def build_text_model(cfg: DictConfig, splits: Any, **extra: Any) -> Any:
    """Instantiate ``cfg.model`` with the label names (or target scale) that come from the data."""
    from recsys_cli.config import build

    params = {key: value for key, value in cfg.model.items() if key not in MODEL_CONFIG_KEYS_NOT_ARGUMENTS}
    sizes: dict[str, Any] = {"n_labels": len(splits.label_names or []) or 1, "label_names": splits.label_names}
    if splits.task == "regression":
        targets = splits.train["label"].to_numpy(dtype=np.float64)
        sizes.update(target_mean=float(targets.mean()), target_std=float(targets.std() or 1.0))
    return build(params, f"model={cfg.model.name}", "check the model.* keys.", **sizes, **extra)


def build_datamodule(cfg: DictConfig, splits: Any, tokenizer: Any) -> Any:
    from recsys_cli.data.text_datamodule import TextDataModule

    text = text_config(cfg)
    return TextDataModule(
        splits,
        tokenizer,
        max_length=int(text.max_length),
        batch_size=int(text.batch_size),
        eval_batch_size=int(text.eval_batch_size),
        num_workers=int(text.num_workers),
        group_by_length=bool(text.group_by_length),
        seed=int(cfg.seed),
        cache_dir=Path(cfg.paths.data_dir) / "processed" / "text",
    )


def describe_protocol(cfg: DictConfig, splits: Any) -> dict[str, Any]:
    text = text_config(cfg)
    sizes = {name: len(getattr(splits, name)) for name in ("train", "valid", "test")}
    labels = f"{len(splits.label_names)} labels" if splits.label_names else "numeric target"
    description = (
        f"{splits.task}: {labels}; train/valid/test {sizes['train']}/{sizes['valid']}/{sizes['test']} texts"
        f"{', deduplicated' if text.dedupe else ''}; max length {text.max_length} tokens; "
        f"finetune {cfg.model.get('finetune', 'full')}"
    )
    return {"task": splits.task, "sizes": sizes, "description": description, "fingerprint": splits.fingerprint}


def checkpoint_metadata(cfg: DictConfig, splits: Any, protocol: dict[str, Any], overrides: list[str]) -> dict:
    from recsys_cli import __version__

    return {
        "kind": KIND,
        "version": __version__,
        "config": to_container(cfg),
        "overrides": list(overrides),
        "protocol": protocol,
        "data": {
            "name": str(cfg.data.name),
            "fingerprint": splits.fingerprint,
            "task": splits.task,
            "label_names": list(splits.label_names or []),
            "oos_label": splits.oos_label,
        },
    }


def train(cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None) -> Any:
    import pytorch_lightning as pl

    from recsys_cli.checkpoint import CheckpointMetadata
    from recsys_cli.evaluation.intent import TextEvaluator
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries
    from recsys_cli.tasks.train import fit_and_test, resolve_run_dir

    quiet_libraries()
    keep_freed_memory()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    previous = None
    if cfg.model.get("init_from"):
        # Refresh a deployed encoder on newer data: its label map is kept and extended by new labels.
        from recsys_cli.checkpoint import build_module, load_checkpoint

        previous = build_module(load_checkpoint(cfg.model.init_from, kind=KIND))
    splits = load_text_splits(cfg, label_names=previous.label_names if previous is not None else None)
    model = build_text_model(cfg, splits)
    if previous is not None:
        model.warm_start(previous)
    datamodule = build_datamodule(cfg, splits, model.tokenizer)
    datamodule.setup()
    run_dir = resolve_run_dir(cfg, run_dir)
    cache_seconds = 0.0
    if cfg.model.get("finetune") == "frozen":
        # The encoder never changes: its pooled outputs are computed once, epochs then train the head.
        start = time.perf_counter()
        datamodule.cache_features(model.eval().embed, batch_size=int(text_config(cfg).eval_batch_size))
        model.train()
        cache_seconds = time.perf_counter() - start
    protocol = describe_protocol(cfg, splits)
    evaluator = TextEvaluator(splits.task, len(splits.label_names or []) or 1, oos_label=splits.oos_label)
    metadata = CheckpointMetadata(checkpoint_metadata(cfg, splits, protocol, overrides or []))
    result = fit_and_test(
        cfg,
        model,
        datamodule,
        [evaluator, metadata],
        evaluator.results,
        run_dir,
        overrides,
        {
            "protocol": protocol,
            "trainable_parameters": model.trainable_parameters(),
            "total_parameters": sum(p.numel() for p in model.parameters()),
            "feature_cache_seconds": round(cache_seconds, 3),
        },
    )
    if result.metrics:
        epochs = max(1, result.metrics["epochs"])
        result.metrics["train_samples_per_second"] = round(
            epochs * len(splits.train) / max(result.metrics["fit_seconds"], 1e-9), 1
        )
        result.metrics["reports"] = write_reports(run_dir, evaluator, splits, "test")
        atomic_write_json(run_dir / "metrics.json", result.metrics)
    return result


def write_reports(folder: Path, evaluator: Any, splits: Any, split: str) -> dict[str, str]:
    """Per-class report (JSON) and confusion matrix (PNG) of a classification split."""
    from recsys_cli.evaluation import classification

    predictions = evaluator.predictions.get(split)
    if predictions is None or splits.task != "classification":
        return {}
    labels = predictions["labels"].numpy()
    predicted = predictions["outputs"].argmax(1).numpy()
    names = list(splits.label_names)
    report = classification.per_class_report(labels, predicted, names)
    atomic_write_json(folder / f"{split}_per_class.json", report)
    files = {"per_class": str(folder / f"{split}_per_class.json")}
    if len(names) <= 150:
        matrix = classification.confusion_matrix(labels, predicted, len(names))
        files["confusion_matrix"] = str(
            classification.save_confusion_png(matrix, names, folder / f"{split}_confusion.png")
        )
    return files


def untuned_baselines(cfg: DictConfig, splits: Any) -> dict[str, dict[str, float]]:
    """Test metrics of what needs no fine-tuning, the "before" that a fine-tuned encoder is compared with.

    - ``majority class`` / ``predict the mean``: the train split's most frequent label or mean target;
    - ``untuned + linear probe``: the pretrained encoder (``model.encoder``, frozen) with a logistic
      (ratings: ridge) regression on its pooled embeddings, L2 chosen on the validation split;
    - ``untuned, zero-shot``: the label whose name embeds nearest (cosine) to the text, no training.
    """
    import torch
    from omegaconf import open_dict

    from recsys_cli.evaluation.intent import text_metrics
    from recsys_cli.models import probe

    if splits.task not in ("classification", "regression"):
        return {}
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model.finetune = "frozen"
    encoder = build_text_model(cfg, splits).eval()
    datamodule = build_datamodule(cfg, splits, encoder.tokenizer)
    datamodule.setup()
    with torch.inference_mode():
        datamodule.cache_features(encoder.embed, batch_size=int(text_config(cfg).eval_batch_size))
    features = {split: datamodule.data[split].features for split in ("train", "valid", "test")}
    labels = {split: datamodule.labels_of(split) for split in ("train", "valid", "test")}
    n_labels = len(splits.label_names or []) or 1

    def score(outputs: torch.Tensor) -> dict[str, float]:
        return text_metrics(splits.task, outputs.float(), labels["test"], n_labels, splits.oos_label, "test/")

    results: dict[str, dict[str, float]] = {}
    if splits.task == "regression":
        results["predict the mean"] = score(torch.full((len(labels["test"]),), labels["train"].float().mean().item()))
        predict, alpha = probe.ridge_regressor(features["train"], labels["train"], features["valid"], labels["valid"])
        results["untuned + linear probe"] = {**score(predict(features["test"])), "ridge_alpha": alpha}
        return results
    majority = torch.bincount(labels["train"], minlength=n_labels).argmax()
    results["majority class"] = score(torch.nn.functional.one_hot(majority.expand(len(labels["test"])), n_labels))
    logits_of, l2 = probe.linear_probe_classifier(
        features["train"], labels["train"], features["valid"], labels["valid"], n_labels
    )
    results["untuned + linear probe"] = {**score(logits_of(features["test"])), "probe_l2": l2}
    prompts = [probe.label_prompt(name) for name in splits.label_names]
    with torch.inference_mode():
        label_batch = datamodule.encode_texts(prompts)
        label_embeddings = encoder.embed(label_batch)
    results["untuned, zero-shot label names"] = score(probe.zero_shot_scores(features["test"], label_embeddings))
    return results


def evaluate(
    checkpoint_path: Path,
    checkpoint: dict[str, Any],
    overrides: list[str],
    output: Path | None,
    baselines: bool = False,
) -> Any:
    """Validation and test metrics of a text checkpoint, with the per-class report and confusion matrix."""
    from omegaconf import OmegaConf

    from recsys_cli.checkpoint import KEY, build_module
    from recsys_cli.config import compose_config
    from recsys_cli.evaluation.intent import TextEvaluator
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries
    from recsys_cli.tasks.evaluate import EvalResult, merge_overrides, run_dir_of
    from recsys_cli.tasks.train import build_trainer

    quiet_libraries()
    keep_freed_memory()
    meta = checkpoint[KEY]
    if overrides:
        cfg = compose_config(merge_overrides(meta.get("overrides", []), list(overrides)))
    else:
        cfg = OmegaConf.create(meta["config"])
    model = build_module(checkpoint)
    # The checkpoint's label map is kept (labels new in this data are appended and count as errors).
    splits = load_text_splits(cfg, label_names=meta["data"]["label_names"] or None)
    datamodule = build_datamodule(cfg, splits, model.tokenizer)
    evaluator = TextEvaluator(splits.task, len(splits.label_names or []) or 1, oos_label=splits.oos_label)
    trainer = build_trainer(
        cfg,
        [evaluator],
        logger=False,
        run_dir=None,
        limit_val_batches=1.0,
        limit_test_batches=1.0,
        devices=1,
        num_nodes=1,
        strategy="auto",
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    output = Path(output) if output else run_dir_of(Path(checkpoint_path)) / "eval" / "metrics.json"
    metrics = {
        "checkpoint": str(checkpoint_path),
        "model": str(cfg.model.name),
        "data": str(cfg.data.name),
        "same_data_as_training": splits.fingerprint == meta["data"]["fingerprint"],
        "protocol": describe_protocol(cfg, splits),
        "valid": evaluator.results.get("val", {}),
        "test": evaluator.results.get("test", {}),
        "reports": write_reports(output.parent, evaluator, splits, "test"),
    }
    if baselines:
        metrics["baselines"] = untuned_baselines(cfg, splits)
    atomic_write_json(output, metrics)
    return EvalResult(metrics=metrics, output=output)


def predict(
    checkpoint: dict[str, Any],
    input_path: Path,
    output: Path,
    top_k: int = 3,
    batch_size: int = 64,
    text_column: str = "text",
    embeddings: Path | None = None,
    progress: bool = False,
) -> Any:
    """Top-k intents with probabilities (or the predicted rating) per text; optionally pooled embeddings.

    Texts are tokenised in one batched call, scored in batches of similar length, and written in input
    order, atomically. Empty texts are reported, not fatal: their rows carry no prediction.
    """
    import pyarrow as pa
    import torch

    from recsys_cli.checkpoint import KEY, build_module
    from recsys_cli.data.sources import read_table
    from recsys_cli.data.text_datamodule import TokenizedTexts, tokenize_split
    from recsys_cli.predict import RecommendationWriter, list_column, output_format
    from recsys_cli.runtime import inference_autocast, keep_freed_memory
    from recsys_cli.tasks.predict import PredictResult, _progress

    keep_freed_memory()
    output_format(output)
    if embeddings is not None and Path(embeddings).suffix.lower() != ".parquet":
        raise RecsysError(f"--embeddings must name a .parquet file (got '{embeddings}').")
    if not Path(input_path).is_file():
        raise RecsysError(f"input file '{input_path}' not found; pass --input texts.csv with a '{text_column}' column.")
    frame = read_table(Path(input_path))
    if text_column not in frame.columns:
        raise RecsysError(
            f"'{input_path}' has no '{text_column}' column (found: {', '.join(map(str, frame.columns[:10]))}); "
            f"rename the column holding the texts to '{text_column}' or pass --text-column."
        )
    texts = frame[text_column]
    if pd.api.types.is_numeric_dtype(texts) and texts.notna().any():
        raise RecsysError(f"column '{text_column}' of '{input_path}' holds numbers, not texts; pass the text column.")
    texts = texts.fillna("").astype(str).str.split().str.join(" ")
    empty = (texts == "").to_numpy()
    model = build_module(checkpoint)
    meta = checkpoint[KEY]["data"]
    names = np.asarray(meta["label_names"], dtype=object)
    regression = meta["task"] == "regression"
    ids, offsets = tokenize_split(texts.tolist(), model.tokenizer, int(_max_length(checkpoint)), None)
    pad_id = model.tokenizer.pad_token_id or 0
    data = TokenizedTexts(ids, offsets, torch.zeros(len(texts)), pad_id)
    rows_to_score = np.flatnonzero(~empty)
    order = rows_to_score[np.argsort(data.lengths[rows_to_score], kind="stable")]
    k = 1 if regression else min(top_k, len(names))
    values = torch.full((len(texts), k), float("nan"))
    indices = torch.zeros((len(texts), k), dtype=torch.long)
    pooled: torch.Tensor | None = None
    start = time.perf_counter()
    trainer_config = checkpoint[KEY]["config"].get("trainer", {})
    autocast = inference_autocast(trainer_config.get("precision", "32-true"))  # as trained: bf16 where native
    with torch.inference_mode(), autocast, _progress(progress, -(-len(order) // batch_size)) as advance:
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            batch = data.token_batch(rows)
            embedded = model.embed(batch)
            output_values = model.head(embedded)
            if regression:
                values[rows, 0] = (output_values.squeeze(-1) * model.target_std + model.target_mean).float()
            else:
                top = torch.softmax(output_values.float(), dim=1).topk(k, dim=1)
                values[rows], indices[rows] = top.values, top.indices
            if embeddings is not None:
                if pooled is None:
                    pooled = torch.full((len(texts), embedded.shape[1]), float("nan"))
                pooled[rows] = embedded.float()
            advance()
    seconds = time.perf_counter() - start
    keep = ~empty
    columns: dict[str, Any] = {"row": pa.array(np.arange(len(texts))), "text": pa.array(texts.tolist(), pa.string())}
    if regression:
        columns["rating"] = pa.array(np.where(keep, values[:, 0].numpy(), np.nan), from_pandas=True)
    else:
        lengths = np.where(keep, k, 0)
        offsets_out = np.concatenate([[0], np.cumsum(lengths)])
        chosen = indices.numpy()[keep]
        columns["intents"] = list_column(names[chosen].astype(str).ravel(), offsets_out)
        columns["probabilities"] = list_column(values.numpy()[keep].astype(np.float32).ravel(), offsets_out)
    with RecommendationWriter(output) as writer:
        writer.write(pa.table(columns))
    if embeddings is not None:
        import pyarrow.parquet as pq

        from recsys_cli.io import atomic_path

        width = pooled.shape[1] if pooled is not None else 0
        flat = pooled.numpy()[keep].ravel() if pooled is not None else np.empty(0, np.float32)
        table = pa.table(
            {
                "row": pa.array(np.flatnonzero(keep)),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float32)), width),
            }
        )
        with atomic_path(embeddings) as tmp:
            pq.write_table(table, tmp)
    counts = {"rows": len(texts), "empty texts (no prediction)": int(empty.sum())}
    return PredictResult(output=output, rows=int(keep.sum()), counts=counts, seconds=seconds)


def _max_length(checkpoint: dict[str, Any]) -> int:
    from recsys_cli.checkpoint import KEY

    return int(checkpoint[KEY]["config"]["data"]["text"]["max_length"])
