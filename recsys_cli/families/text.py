"""The text family: encoders fine-tuned on labelled texts (`model=bert_intent`, `model=bert_rating`).

Data: texts with labels (``data.text``) cleaned, deduplicated and split once into
``data/processed/text/<name>-<key>/`` (:func:`recsys_cli.data.text.prepare_text`), tokenised and batched by
:class:`~recsys_cli.data.text_datamodule.TextDataModule`. Metrics: accuracy, macro-F1 (RMSE/MAE for
ratings), a per-class report and a confusion matrix. A checkpoint is of kind ``text`` and carries its
label map and the processed folder's key, so eval reopens the same texts without the raw files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from recsys_cli.config import build, to_container
from recsys_cli.core.family import ModelFamily, PredictRequest, PredictResult, Prepared
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError, warn
from recsys_cli.evaluation import oos


def prepare_texts(cfg: DictConfig, label_names: list[str] | None = None, force: bool = False) -> Any:
    """The configured text source, cleaned and split once into its processed folder (then reused)."""
    from recsys_cli.data.text import prepare_text

    text = cfg.data.text
    source = build(text.source, f"the text source of data={cfg.data.name}", "check the data.text.source keys.")
    return prepare_text(
        cfg.data.name,
        source,
        cfg.paths.data_dir,
        task="regression" if cfg.model.get("task") == "regression" else "classification",
        valid_ratio=text.valid_ratio,
        test_ratio=text.test_ratio,
        seed=text.split_seed,
        dedupe=text.dedupe,
        unknown_labels=float(text.get("unknown_labels", 0.0)),
        label_names=label_names,
        force=force,
    )


def data_spec(splits: Any) -> DataSpec:
    spec = DataSpec(task=splits.task, label_names=splits.label_names, oos_label=splits.oos_label)
    if splits.task == "regression":
        targets = splits.train["label"].to_numpy(dtype=np.float64)
        spec.target_mean, spec.target_std = float(targets.mean()), float(targets.std() or 1.0)
    return spec


def _prepared(name: str, splits: Any, reused: bool = False, same: bool | None = None) -> Prepared:
    rows = [(reason, f"{value:,}") for reason, value in splits.counts.items()]
    rows += [(f"{split} texts", f"{len(getattr(splits, split)):,}") for split in ("train", "valid", "test")]
    rows.append(("labels", f"{len(splits.label_names)}" if splits.label_names else "numeric target"))
    return Prepared(
        name=name,
        content=splits,
        spec=data_spec(splits),
        path=splits.path,
        fingerprint=splits.fingerprint,
        reused=reused,
        title=f"{name}: texts",
        summary=rows,
        same_as_checkpoint=same,
    )


def describe_protocol(cfg: DictConfig, splits: Any) -> dict[str, Any]:
    text = cfg.data.text
    sizes = {name: len(getattr(splits, name)) for name in ("train", "valid", "test")}
    labels = f"{len(splits.label_names)} labels" if splits.label_names else "numeric target"
    description = (
        f"{splits.task}: {labels}; train/valid/test {sizes['train']}/{sizes['valid']}/{sizes['test']} texts"
        f"{', deduplicated' if text.dedupe else ''}; max length {text.max_length} tokens; "
        f"finetune {cfg.model.get('finetune', 'full')}"
    )
    return {"task": splits.task, "sizes": sizes, "description": description, "fingerprint": splits.fingerprint}


def write_reports(folder: Path, evaluator: Any, splits: Any, split: str) -> dict[str, str]:
    """Per-class report (JSON) and confusion matrix (PNG) of a classification split."""
    from recsys_cli.evaluation import classification
    from recsys_cli.io import atomic_write_json

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


class TextFamily(ModelFamily):
    kind = "text"

    def __init__(self) -> None:
        self.previous: Any = None  # model.init_from: the earlier model this run starts from

    def reads(self, data_cfg: DictConfig) -> bool:
        return data_cfg.get("text") is not None

    def missing_data_message(self, cfg: DictConfig) -> str:
        return (
            f"data={cfg.data.name} has no texts for model={cfg.model.name}; use a text dataset "
            "(data=banking77, clinc150, amazon_reviews, text_table or synthetic)."
        )

    def prepare(self, cfg: DictConfig, force: bool = False) -> Prepared:
        labels = None
        if cfg.model.get("init_from"):
            # Refresh a deployed encoder on newer data: its label map is kept and extended by new labels.
            from recsys_cli.checkpoint import build_module, load_checkpoint

            self.previous = build_module(load_checkpoint(cfg.model.init_from, kind=self.kind))
            labels = self.previous.label_names
        splits, reused = prepare_texts(cfg, label_names=labels, force=force)
        return _prepared(cfg.data.name, splits, reused)

    def reopen(self, cfg: DictConfig, checkpoint: dict[str, Any]) -> Prepared:
        from recsys_cli.checkpoint import KEY
        from recsys_cli.data.text import open_text_folder, text_folder

        meta = checkpoint[KEY]
        stored = meta["data"]
        if to_container(cfg.data) == meta["config"]["data"] and stored.get("key"):
            # The training texts themselves, processed: no raw file is read.
            splits = open_text_folder(text_folder(cfg.paths.data_dir, stored["name"], stored["key"]), stored["key"])
            if splits is not None:
                return _prepared(cfg.data.name, splits, reused=True, same=True)
        # The checkpoint's label map is kept (labels new in this data are appended and count as errors).
        splits, reused = prepare_texts(cfg, label_names=stored["label_names"] or None)
        empty = [split for split in ("valid", "test") if len(getattr(splits, split)) == 0]
        if empty:
            warn(f"data={cfg.data.name} has no {' or '.join(empty)} texts; its metrics are left out.")
        return _prepared(cfg.data.name, splits, reused, same=splits.fingerprint == stored["fingerprint"])

    def datamodule(self, cfg: DictConfig, data: Prepared, model: Any) -> Any:
        from recsys_cli.data.text_datamodule import TextDataModule

        text = cfg.data.text
        splits = data.content
        if text.max_length < 2:
            raise RecsysError(
                f"data.text.max_length={text.max_length} leaves no room for a text besides the encoder's start and "
                "end tokens; pass at least 2 tokens, e.g. data.text.max_length=64."
            )
        return TextDataModule(
            splits,
            model.tokenizer,
            max_length=text.max_length,
            batch_size=text.batch_size,
            eval_batch_size=text.eval_batch_size,
            num_workers=text.num_workers,
            group_by_length=text.group_by_length,
            seed=cfg.seed,
            cache_dir=splits.path / "tokens",  # tokenisations are cached beside the texts they come from
        )

    def before_fit(self, cfg: DictConfig, model: Any, datamodule: Any) -> dict[str, Any]:
        if self.previous is not None:
            model.warm_start(self.previous)
        datamodule.setup()
        sizes = {split: len(datamodule.data[split]) for split in ("train", "valid")}
        if not all(sizes.values()):
            # Lightning would early-stop on a metric that was never logged.
            raise RecsysError(
                f"data={cfg.data.name} is too small to train and validate on ({sizes['train']} training and "
                f"{sizes['valid']} validation texts after cleaning); give more texts per label (a label needs 3+ "
                "for a validation share), or a larger data.text.valid_ratio."
            )
        cache_seconds = 0.0
        if cfg.model.get("finetune") == "frozen":
            # The encoder never changes: its pooled outputs are computed once, epochs then train the head.
            # They are computed at the run's precision, as validation, eval and predict compute them.
            from recsys_cli.runtime import inference_autocast

            start = time.perf_counter()
            with inference_autocast(cfg.trainer.precision, cfg.trainer.accelerator):
                datamodule.cache_features(model.eval().embed, batch_size=cfg.data.text.eval_batch_size)
            model.train()
            cache_seconds = time.perf_counter() - start
        return {
            "trainable_parameters": model.trainable_parameters(),
            "total_parameters": sum(p.numel() for p in model.parameters()),
            "feature_cache_seconds": round(cache_seconds, 3),
        }

    def evaluator(self, cfg: DictConfig, data: Prepared, checkpoint: dict[str, Any] | None = None) -> Any:
        from recsys_cli.evaluation.intent import TextEvaluator

        return TextEvaluator(data.spec.task, data.spec.n_labels, oos_label=data.spec.oos_label)

    def protocol(self, cfg: DictConfig, data: Prepared) -> dict[str, Any]:
        return describe_protocol(cfg, data.content)

    def checkpoint_data(self, cfg: DictConfig, data: Prepared, datamodule: Any) -> dict[str, Any]:
        splits = data.content
        return {
            "name": data.name,
            "fingerprint": splits.fingerprint,
            "key": splits.key,
            "task": splits.task,
            "label_names": list(splits.label_names or []),
            "oos_label": splits.oos_label,
        }

    def reports(
        self, folder: Path, evaluator: Any, data: Prepared, model: Any, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        if "fit_seconds" in metrics:  # after training: throughput over every epoch
            epochs = max(1, metrics["epochs"])
            samples = epochs * len(data.content.train)
            entries["train_samples_per_second"] = round(samples / max(metrics["fit_seconds"], 1e-9), 1)
        entries["reports"] = write_reports(Path(folder), evaluator, data.content, "test")
        return entries

    def baselines(self, cfg: DictConfig, data: Prepared) -> dict[str, dict[str, float]]:
        return untuned_baselines(cfg, data, self)

    def predict(self, checkpoint: dict[str, Any], request: PredictRequest) -> PredictResult:
        if request.input_path is None:
            raise RecsysError("a text model predicts for --input FILE (a table with a text column); give one.")
        if request.explain:
            raise RecsysError(
                "--explain is for recommenders (it names the history items behind each recommendation); a text "
                "model already writes each text's intents with their probabilities: drop --explain."
            )
        return predict_texts(checkpoint, request)


def untuned_baselines(cfg: DictConfig, data: Prepared, family: TextFamily) -> dict[str, dict[str, float]]:
    """Test metrics of what needs no fine-tuning, the "before" that a fine-tuned encoder is compared with.

    - ``majority class`` / ``predict the mean``: the train split's most frequent label or mean target;
    - ``untuned + linear probe``: the pretrained encoder (``model.encoder``, frozen) with a logistic
      (ratings: ridge) regression on its pooled embeddings, L2 chosen on the validation split;
    - ``untuned, zero-shot``: the label whose name embeds nearest (cosine) to the text, no training.
    """
    import torch
    from omegaconf import open_dict

    from recsys_cli.core.run import build_model
    from recsys_cli.evaluation.intent import text_metrics
    from recsys_cli.models import probe

    splits = data.content
    if splits.task not in ("classification", "regression"):
        return {}
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model.finetune = "frozen"
    encoder = build_model(cfg, data.spec).eval()
    datamodule = family.datamodule(cfg, data, encoder)
    datamodule.setup()
    with torch.inference_mode():
        datamodule.cache_features(encoder.embed, batch_size=cfg.data.text.eval_batch_size)
    features = {split: datamodule.data[split].features for split in ("train", "valid", "test")}
    labels = {split: datamodule.labels_of(split) for split in ("train", "valid", "test")}
    n_labels = data.spec.n_labels

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


def _merge_lora(encoder: Any) -> None:
    """Fold LoRA adapters into the weights they adapt and put the plain layers back (peft), in place."""
    if not any("lora_" in name for name, _ in encoder.named_parameters()):
        return
    from peft.tuners.lora import LoraLayer

    for name, module in list(encoder.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent) if parent else encoder, child, module.get_base_layer())


def quantize_int8(model: Any) -> Any:
    """The text model with its encoder's linear layers quantised to int8 (dynamic: weights per output channel
    once, activations per batch; PyTorch's fbgemm kernels, AVX2 and up; LoRA adapters merged into the weights
    first). The head stays float32, so the
    intents' probabilities and the out-of-scope thresholds keep their scale."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise RecsysError("--int8 needs PyTorch's fbgemm int8 kernels (x86 CPUs); drop --int8 on this machine.")
    torch.backends.quantized.engine = "fbgemm"
    _merge_lora(model.encoder)
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        model.encoder = quantize_dynamic(model.encoder, {torch.nn.Linear: per_channel_dynamic_qconfig})
    return model


def predict_texts(checkpoint: dict[str, Any], request: PredictRequest) -> PredictResult:
    """Top-k intents with probabilities (or the predicted rating) per text; optionally pooled embeddings.

    Texts are tokenised in one batched call, scored in batches of similar length (default 64 texts), and
    written in input order, atomically. Empty texts are reported, not fatal: their rows carry no prediction.
    """
    import pyarrow as pa
    import torch

    from recsys_cli.checkpoint import KEY, build_module
    from recsys_cli.core.progress import progress_bar
    from recsys_cli.data.sources import read_table
    from recsys_cli.data.text_datamodule import TokenizedTexts, tokenize_split
    from recsys_cli.predict import RecommendationWriter, list_column
    from recsys_cli.runtime import inference_autocast

    input_path, text_column, embeddings = Path(request.input_path), request.text_column, request.embeddings
    batch_size = request.batch_size or 64
    if embeddings is not None and Path(embeddings).suffix.lower() != ".parquet":
        raise RecsysError(f"--embeddings must name a .parquet file (got '{embeddings}').")
    if not input_path.is_file():
        raise RecsysError(f"input file '{input_path}' not found; pass --input texts.csv with a '{text_column}' column.")
    frame = read_table(input_path)
    if len(frame) == 0:
        raise RecsysError(f"'{input_path}' has no rows; give one text per row in a '{text_column}' column.")
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
    if request.int8:
        model = quantize_int8(model)
    meta = checkpoint[KEY]
    names = np.asarray(meta["data"]["label_names"], dtype=object)
    regression = meta["data"]["task"] == "regression"
    max_length = meta["config"]["data"]["text"]["max_length"]
    ids, offsets = tokenize_split(texts.tolist(), model.tokenizer, max_length, None)
    pad_id = model.tokenizer.pad_token_id or 0
    data = TokenizedTexts(ids, offsets, torch.zeros(len(texts)), pad_id)
    rows_to_score = np.flatnonzero(~empty)
    order = rows_to_score[np.argsort(data.lengths[rows_to_score], kind="stable")]
    k = 1 if regression else min(request.top_k, len(names))
    values = torch.full((len(texts), k), float("nan"))
    indices = torch.zeros((len(texts), k), dtype=torch.long)
    oos_label = meta["data"].get("oos_label")
    method, threshold = oos.out_of_scope_rule(model, oos_label)
    out_of_scope = torch.zeros(len(texts), dtype=torch.bool)
    space = model.training_space().as_float() if method in oos.SPACE_METHODS else None
    pooled: torch.Tensor | None = None
    start = time.perf_counter()
    trainer_config = meta["config"].get("trainer", {})
    # as trained: bf16 where native; int8 layers take float32 activations
    autocast = inference_autocast("32-true" if request.int8 else trainer_config.get("precision", "32-true"))
    total_batches = -(-len(order) // batch_size)
    with torch.inference_mode(), autocast, progress_bar(request.progress, total_batches) as advance:
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            batch = data.token_batch(rows)
            embedded = model.embed(batch)
            output_values = model.outputs_of(embedded)
            if regression:
                values[rows, 0] = output_values.float()
            else:
                top = torch.softmax(output_values.float(), dim=1).topk(k, dim=1)
                values[rows], indices[rows] = top.values, top.indices
                if method is not None:
                    out_of_scope[rows] = oos.flag(output_values, method, threshold, oos_label, embedded, space)
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
        if method is not None:  # None: the model knows no out-of-scope label, so it marks nothing
            columns["out_of_scope"] = pa.array(np.where(keep, out_of_scope.numpy(), False))
    with RecommendationWriter(request.output) as writer:
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
    counts: dict[str, Any] = {"rows": len(texts), "empty texts (no prediction)": int(empty.sum())}
    if method is not None:
        counts["out of scope"] = int(out_of_scope.numpy()[keep].sum())
        counts["marked by"] = method if method == "class" else f"{method} (validation threshold {threshold:.4g})"
    return PredictResult(output=request.output, rows=int(keep.sum()), counts=counts, seconds=seconds)
