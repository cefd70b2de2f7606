"""The intent encoder: a BERT-family transformer fine-tuned to read what a user writes.

``AutoModel`` encoder → pooling (mean over tokens, or the first token) → dropout → linear head. Tasks:
``classification`` (one intent per text; cross-entropy with optional label smoothing), ``multilabel``
(several intents; binary cross-entropy) and ``regression`` (e.g. review text → star rating; mean squared
error on standardised targets). Fine-tuning strategies (:func:`recsys_cli.models.encoders.apply_finetune`):
full, frozen (head only; the encoder's outputs are cached once, see ``TextDataModule.cache_features``),
top_k (last k layers) and LoRA. Optimisation follows BERT fine-tuning practice (Devlin et al. 2019): AdamW
without weight decay on biases and norms, linear warm-up then linear decay, gradient-norm clipping.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.data import batch as keys
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError
from recsys_cli.evaluation import oos
from recsys_cli.models import encoders

TASKS = ("classification", "multilabel", "regression")
POOLING = ("mean", "cls")


OOS_METHODS = (*oos.RULES, "auto")


def _out_of_scope_state_of_older_checkpoints(module: BertIntent, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints written before out-of-scope thresholds (or before a method) existed load with none chosen."""
    thresholds = state.get(f"{prefix}oos_thresholds")
    if thresholds is None or len(thresholds) < len(oos.METHODS):
        padded = torch.full((len(oos.METHODS),), float("nan"))
        if thresholds is not None:
            padded[: len(thresholds)] = thresholds
        state[f"{prefix}oos_thresholds"] = padded
    for name in ("oos_means", "oos_precision", "oos_validation_accuracy"):
        state.setdefault(f"{prefix}{name}", torch.full_like(getattr(module, name), float("nan")))
    # The knn bank's size is the training set's: take the checkpoint's shape before loading into it.
    bank = state.setdefault(f"{prefix}oos_bank", module.oos_bank.new_zeros(0, module.oos_bank.shape[1]))
    module.oos_bank = module.oos_bank.new_empty(bank.shape)


class BertIntent(pl.LightningModule):
    """Text → intent logits (or a rating). Sizes and label names come from the data."""

    # The model family that trains, evaluates and applies this model (recsys_cli.families).
    family = "recsys_cli.families.text.TextFamily"

    @classmethod
    def data_arguments(cls, data: DataSpec, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Label names (classification) or the target's scale (regression) come from the data."""
        arguments: dict[str, Any] = {"n_labels": data.n_labels, "label_names": data.label_names}
        if data.target_mean is not None:
            arguments.update(target_mean=data.target_mean, target_std=data.target_std)
        return arguments

    def __init__(
        self,
        n_labels: int,
        label_names: list[str] | None = None,
        task: str = "classification",
        encoder: str = "minilm-packaged",
        pooling: str = "mean",
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        finetune: str = "full",
        top_k_layers: int = 2,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        lora_targets: list[str] | None = None,
        lr: float = 1e-4,
        lora_lr: float = 1e-3,
        head_lr: float | None = 1e-2,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_grad_norm: float | None = 1.0,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        encoder_snapshot: dict[str, Any] | None = None,
        oos_method: str = "auto",
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise RecsysError(f"unknown model.task '{task}'; use one of: {', '.join(TASKS)}.")
        if oos_method not in OOS_METHODS:
            raise RecsysError(f"unknown model.oos_method '{oos_method}'; use one of: {', '.join(OOS_METHODS)}.")
        if pooling not in POOLING:
            raise RecsysError(f"unknown model.pooling '{pooling}'; use one of: {', '.join(POOLING)}.")
        self.save_hyperparameters()
        # Frozen and LoRA runs never change the encoder's own weights: their checkpoints leave them out
        # and they come back from model.encoder. Other runs rebuild the architecture from the snapshot.
        self.keeps_base_weights = finetune in ("frozen", "lora")
        if encoder_snapshot is None or self.keeps_base_weights:
            self.encoder, self.tokenizer = encoders.load_pretrained(encoder)
            if encoder_snapshot is None:
                self.hparams["encoder_snapshot"] = encoders.snapshot(self.encoder, self.tokenizer)
        else:
            self.encoder, self.tokenizer = encoders.from_snapshot(encoder_snapshot)
        encoders.apply_finetune(
            self.encoder,
            finetune,
            top_k_layers=top_k_layers,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_target_modules=lora_targets,
        )
        self.strict_loading = not self.keeps_base_weights
        self.task = task
        self.n_labels = n_labels
        self.label_names = list(label_names) if label_names is not None else None
        self.pooling = pooling
        self.label_smoothing = label_smoothing
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1 if task == "regression" else n_labels))
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))
        # Out-of-scope thresholds, one per method of recsys_cli.evaluation.oos, chosen on validation by the
        # evaluator (nan: not chosen yet, or the data has no out-of-scope label); saved with the weights.
        self.oos_method = oos_method
        self.register_buffer("oos_thresholds", torch.full((len(oos.METHODS),), float("nan")))
        # What the embedding-space methods know of the training texts (class means, shared precision, the texts'
        # normalised embeddings), fitted before each validation round (:meth:`fit_out_of_scope`); empty until then.
        classes = 1 if task == "regression" else n_labels
        self.register_buffer("oos_means", torch.full((classes, hidden), float("nan")))
        self.register_buffer("oos_precision", torch.full((hidden, hidden), float("nan")))
        self.register_buffer("oos_bank", torch.zeros(0, hidden, dtype=torch.float16))
        # Overall validation accuracy (out of scope as one more class) of each rule in oos.RULES: what auto picks by.
        self.register_buffer("oos_validation_accuracy", torch.full((len(oos.RULES),), float("nan")))
        self._register_load_state_dict_pre_hook(_out_of_scope_state_of_older_checkpoints, with_module=True)
        self.train()  # from_pretrained returns eval mode, which Lightning would keep (no dropout in fine-tuning)

    # --- the model ------------------------------------------------------------------------------
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled text embeddings ``[B, H]``."""
        if keys.FEATURES in batch:
            return batch[keys.FEATURES]
        mask = batch[keys.ATTENTION_MASK]
        hidden = self.encoder(input_ids=batch[keys.INPUT_IDS], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, n_labels]``; for regression the prediction in the target's own scale ``[B]``."""
        return self.outputs_of(self.embed(batch))

    def outputs_of(self, embedded: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from pooled embeddings ``[B, H]``."""
        output = self.head(embedded)
        if self.task == "regression":
            return output.squeeze(-1) * self.target_std + self.target_mean
        return output

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self.head(self.embed(batch))
        labels = batch[keys.LABELS]
        if self.task == "regression":
            return F.mse_loss(output.squeeze(-1), (labels - self.target_mean) / self.target_std)
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(output, labels.float())
        return F.cross_entropy(output, labels, label_smoothing=self.label_smoothing)

    # --- Lightning plumbing ---------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch[keys.LABELS]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The outputs (logits or ratings) and the pooled embeddings (the embedding-space out-of-scope rules')."""
        embedded = self.embed(batch)
        return {"outputs": self.outputs_of(embedded), "embeddings": embedded}

    test_step = validation_step

    # --- out of scope ---------------------------------------------------------------------------
    def training_space(self) -> oos.TrainingSpace:
        return oos.TrainingSpace(self.oos_means, self.oos_precision, self.oos_bank)

    @torch.no_grad()
    def fit_out_of_scope(self, datamodule: Any, oos_label: int | None, batch_size: int = 128) -> None:
        """Fit the embedding-space methods on the training texts' embeddings as the model embeds them now (eval
        mode: no dropout): class means, shared covariance, the knn bank."""
        was_training = self.training
        self.eval()
        try:
            embeddings = datamodule.embed_split("train", self.embed, batch_size, device=self.device)
        finally:
            self.train(was_training)
        if len(embeddings) == 0:
            return
        labels = datamodule.labels_of("train")
        space = oos.fit_training_space(embeddings, labels, self.n_labels, oos_label, seed=datamodule.seed)
        self.oos_means.copy_(space.means)
        self.oos_precision.copy_(space.precision)
        self.oos_bank = space.bank.to(self.device)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on biases and norms; the head may have its own lr), linear warm-up and decay."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            no_decay = parameter.ndim < 2 or "norm" in name.lower()
            groups.setdefault((name.startswith("head."), no_decay), []).append(parameter)
        lr = self.hparams.lora_lr if self.hparams.finetune == "lora" else self.hparams.lr
        head_lr = lr if self.hparams.head_lr is None else self.hparams.head_lr
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": params,
                    "lr": head_lr if is_head else lr,
                    "weight_decay": 0.0 if no_decay else self.hparams.weight_decay,
                }
                for (is_head, no_decay), params in groups.items()
            ],
            # One fused kernel over all parameters: the foreach update costs 7x more per step on CPU.
            # Not under fp16 loss scaling, which must unscale gradients before clipping.
            fused=str(self.trainer.precision) not in ("16-mixed", "16-true", "16")
            and all(p.device.type in ("cpu", "cuda") for params in groups.values() for p in params),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        """``trainer.gradient_clip_val`` when set, otherwise the model's ``max_grad_norm``."""
        value = gradient_clip_val if gradient_clip_val is not None else self.hparams.max_grad_norm
        if not value:
            return
        if optimizer.defaults.get("fused") and str(self.trainer.precision).startswith("bf16"):
            # Lightning's mixed-precision plugin refuses fused optimisers (a guard for fp16 loss scaling);
            # bf16 scales nothing, so clip the true gradients directly.
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            if str(gradient_clip_algorithm or "norm").lower().endswith("value"):
                torch.nn.utils.clip_grad_value_(parameters, value)
            else:
                torch.nn.utils.clip_grad_norm_(parameters, value)
            return
        self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Frozen and LoRA checkpoints keep only what training changed (head, adapters): they stay small."""
        if not self.keeps_base_weights:
            return
        frozen = {f"encoder.{name}" for name, p in self.encoder.named_parameters() if not p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    @torch.no_grad()
    def warm_start(self, previous: BertIntent) -> None:
        """Start from an earlier intent model: its encoder, and its head rows for the labels it knew.

        The label map of this model extends the earlier one (same order, new labels appended), so
        row ``i`` of the earlier head is row ``i`` here; new labels start from a fresh row.
        """
        if previous.hparams.finetune != self.hparams.finetune or previous.task != self.task:
            raise RecsysError(
                f"model.init_from holds a {previous.task} model fine-tuned with finetune={previous.hparams.finetune}; "
                f"train this one the same way (model.finetune={previous.hparams.finetune}, model.task={previous.task})."
            )
        try:
            self.encoder.load_state_dict(previous.encoder.state_dict())
        except RuntimeError:
            raise RecsysError(
                "model.init_from holds a model with another encoder architecture; "
                f"set model.encoder={previous.hparams.encoder} as in the earlier run."
            ) from None
        old_head, new_head = previous.head[-1], self.head[-1]
        rows = min(old_head.weight.shape[0], new_head.weight.shape[0])
        new_head.weight[:rows] = old_head.weight[:rows]
        new_head.bias[:rows] = old_head.bias[:rows]
        self.target_mean.copy_(previous.target_mean)
        self.target_std.copy_(previous.target_std)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
