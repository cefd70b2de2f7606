"""Evaluation of text models (intents, ratings), as a Lightning callback.

Models return logits (or predicted ratings) from ``validation_step``/``test_step``; this callback
collects them with the labels, across processes when training is distributed (each example counted
once), and logs ``val/accuracy``, ``val/macro_f1``, ``test/rmse``, ... that early stopping monitors.
The last predictions of each split are kept for reports (per-class table, confusion matrix).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from recsys_cli.data import batch as keys
from recsys_cli.evaluation import classification, oos
from recsys_cli.evaluation.base import SplitEvaluator
from recsys_cli.runtime import inference_autocast


def text_metrics(
    task: str, outputs: torch.Tensor, labels: torch.Tensor, n_labels: int, oos_label: int | None, prefix: str
) -> dict[str, float]:
    """Metrics of a whole split from the model's outputs."""
    if task == "regression":
        return classification.regression_metrics(labels.numpy(), outputs.numpy(), prefix=prefix)
    if task == "multilabel":
        predicted = outputs > 0
        truth = labels.bool()
        tp = (predicted & truth).sum(0).double()
        precision = tp / predicted.sum(0).clamp(min=1)
        recall = tp / truth.sum(0).clamp(min=1)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        return {
            f"{prefix}exact_match": (predicted == truth).all(1).double().mean().item(),
            f"{prefix}macro_f1": f1.mean().item(),
        }
    metrics = classification.classification_metrics(
        labels.numpy(), outputs.argmax(1).numpy(), n_labels, oos_label=oos_label, prefix=prefix
    )
    for k in (3, 5):
        if n_labels > k:
            metrics[f"{prefix}top{k}_accuracy"] = classification.topk_accuracy(labels.numpy(), outputs.numpy(), k)
    return metrics


class TextEvaluator(SplitEvaluator):
    """Computes and logs classification or regression metrics for validation and test."""

    def __init__(self, task: str, n_labels: int, oos_label: int | None = None) -> None:
        self.task = task
        self.n_labels = n_labels
        self.oos_label = oos_label
        self.results: dict[str, dict[str, float]] = {}
        self.predictions: dict[str, dict[str, torch.Tensor]] = {}
        self._chunks: dict[str, list[torch.Tensor]] = {}

    def _start(self) -> None:
        self._chunks = {}

    def _batch(self, pl_module: pl.LightningModule, outputs: Any, batch: dict[str, torch.Tensor]) -> None:
        # A model returns its outputs, or a dict of them with the pooled embeddings (the embedding-space rules').
        parts = dict(outputs) if isinstance(outputs, dict) else {"outputs": outputs}
        parts.update(labels=batch[keys.LABELS], index=batch[keys.INDEX])
        for name, values in parts.items():
            self._chunks.setdefault(name, []).append(values.detach().float().cpu())

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        if trainer.sanity_checking or not self._chunks:
            return
        parts = {name: torch.cat(chunks) for name, chunks in self._chunks.items()}
        self._chunks = {}
        if trainer.world_size > 1:
            # The distributed sampler pads shards with repeated rows: gather all, keep each row once.
            gathered = {
                name: trainer.strategy.all_gather(values.to(pl_module.device)).cpu().flatten(0, 1)
                for name, values in parts.items()
            }
            _, first = np.unique(gathered["index"].numpy(), return_index=True)
            parts = {name: values[torch.from_numpy(first)] for name, values in gathered.items()}
        labels = parts["labels"] if self.task != "classification" else parts["labels"].long()
        metrics = text_metrics(self.task, parts["outputs"], labels, self.n_labels, self.oos_label, f"{prefix}/")
        if self.task == "classification" and self.oos_label is not None:
            metrics.update(self._out_of_scope(trainer, pl_module, parts, labels, prefix, metrics[f"{prefix}/accuracy"]))
        pl_module.log_dict(metrics, sync_dist=False)
        self.results[prefix] = metrics
        self.predictions[prefix] = {"outputs": parts["outputs"], "labels": labels, "index": parts["index"].long()}

    def _out_of_scope(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        parts: dict[str, torch.Tensor],
        labels: torch.Tensor,
        prefix: str,
        argmax_accuracy: float,
    ) -> dict[str, float]:
        """Each method's in-scope accuracy and out-of-scope recall/precision (:mod:`.oos`).

        Validation fits the embedding-space methods on the training texts, chooses the thresholds and stores
        both in the model (so the best checkpoint carries its own), with each rule's overall validation
        accuracy (what ``oos_method=auto`` picks by); test applies the stored ones.
        """
        thresholds = getattr(pl_module, "oos_thresholds", None)
        if thresholds is None:
            return {}
        logits, embeddings = parts["outputs"], parts.get("embeddings")
        space = None
        if embeddings is not None and hasattr(pl_module, "training_space"):
            if prefix == "val" and getattr(trainer, "datamodule", None) is not None:
                with inference_autocast(trainer.precision, pl_module.device.type):
                    pl_module.fit_out_of_scope(trainer.datamodule, self.oos_label, trainer.datamodule.eval_batch_size)
            space = oos.TrainingSpace(*(values.cpu() for values in pl_module.training_space())).as_float()
        metrics: dict[str, float] = {}
        # What oos_method=auto chooses by; only validation with out-of-scope texts can tell the rules apart.
        chosen_by = getattr(pl_module, "oos_validation_accuracy", None)
        if prefix != "val" or not bool((labels == self.oos_label).any()):
            chosen_by = None
        if chosen_by is not None:
            chosen_by.fill_(float("nan"))
            chosen_by[oos.RULES.index("class")] = argmax_accuracy
        for index, method in enumerate(oos.METHODS):
            if method in oos.SPACE_METHODS and (space is None or not space.fitted(method)):
                continue
            if prefix == "val":
                scores = oos.in_scope_scores(logits, method, self.oos_label, embeddings, space)
                thresholds[index] = oos.choose_threshold(scores, logits, labels, self.oos_label)
            threshold = float(thresholds[index])
            if threshold != threshold:  # nan: never validated (e.g. test of a model without thresholds)
                continue
            predicted = oos.predictions_with_rejection(logits, method, threshold, self.oos_label, embeddings, space)
            found = classification.classification_metrics(
                labels.numpy(), predicted.numpy(), self.n_labels, oos_label=self.oos_label
            )
            for name in ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1"):
                metrics[f"{prefix}/{method}/{name}"] = found[name]
            if chosen_by is not None:
                chosen_by[oos.RULES.index(method)] = found["accuracy"]
            metrics[f"{prefix}/{method}/threshold"] = threshold
        return metrics
