"""Content understanding: item text (and a user's own words) → embeddings from a transformer encoder.

``model.text_encoder`` names the encoder as ``model.encoder`` does for the intent model
(:func:`recsys_cli.models.encoders.resolve_encoder`: ``minilm-packaged``, a local Hugging Face folder or a
hub id) or as a fine-tuned ``bert_intent`` checkpoint (a ``.ckpt`` file, or its run folder): that model's
encoder and pooling embed the text, and its head also gives each text's intent distribution.

Item embeddings are computed once, in batches of similar length, and cached in the processed data folder
under ``item_text/<encoder>-<key>.npy``; the key covers the encoder's identity (its files or checkpoint
content), the texts, the token limit and the pooling, so another encoder or changed item text never reads
a stale cache. The cache is plain ``.npy`` (loaded with ``allow_pickle=False``) plus a ``.json`` with what
was encoded and how fast.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_path, atomic_write_json

CACHE_VERSION = 1
TEXT_FIELDS = ("title", "text", "category")
# Encoders whose transformer layers take (hidden_states, additive mask): the top ones can be tuned.
TUNABLE = ("BertModel", "RobertaModel", "XLMRobertaModel", "ElectraModel", "MPNetModel")
MAX_CHARS = 2000  # longer item texts are cut before tokenising (the token limit cuts them anyway)


def item_text_strings(items: pd.DataFrame, n_items: int) -> list[str]:
    """One string per item index (0 = padding: empty): title, text and category joined, each part once."""
    columns = [column for column in TEXT_FIELDS if column in items.columns]
    out = [""] * (n_items + 1)
    if not columns or items.empty:
        return out
    parts = items[columns].fillna("").astype(str)
    for row, values in zip(items["item_idx"].to_numpy(), parts.itertuples(index=False), strict=True):
        seen: list[str] = []
        for value in values:
            value = value.strip()
            if value and not any(value in earlier for earlier in seen):
                seen.append(value)
        out[int(row)] = " ".join(seen)[:MAX_CHARS]
    return out


def texts_fingerprint(texts: list[str]) -> str:
    return hashlib.blake2b("\x1f".join(texts).encode("utf-8", "replace"), digest_size=16).hexdigest()


def checkpoint_path(name: str) -> Path | None:
    """The ``bert_intent`` checkpoint ``name`` points at (a ``.ckpt`` file or a run folder), else None."""
    path = Path(name).expanduser()
    if path.suffix == ".ckpt":
        return path
    if path.is_dir() and (path / "checkpoints" / "best.ckpt").is_file():
        return path / "checkpoints" / "best.ckpt"
    return None


def _file_identity(paths: list[Path]) -> str:
    """Content hash of small files, size and modification time of large ones (weights)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(paths):
        stat = path.stat()
        digest.update(path.name.encode())
        if stat.st_size < (1 << 20):
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()


class TextEmbedder:
    """A frozen encoder that turns strings into pooled embeddings (and intents, for a ``bert_intent`` checkpoint).

    The encoder's weights load on the first :meth:`embed` call: a cache hit never loads them.
    ``precision``: ``auto`` runs bf16 where the CPU (or GPU) computes it natively, else float32; the
    embeddings are returned as float32 either way.
    """

    def __init__(self, name: str, max_length: int = 64, batch_size: int = 128, precision: str = "auto") -> None:
        from recsys_cli.models import encoders

        self.name = str(name)
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        self.label_names: list[str] | None = None
        self.head: Any = None
        self._checkpoint: dict[str, Any] | None = None
        self._loaded = False
        ckpt = checkpoint_path(self.name)
        if ckpt is not None:
            from recsys_cli.checkpoint import load_checkpoint

            if not ckpt.is_file():
                raise RecsysError(
                    f"encoder checkpoint '{ckpt}' not found; pass model.intent_checkpoint (or model.text_encoder) "
                    "=<a bert_intent best.ckpt or its run folder>."
                )
            self._checkpoint = load_checkpoint(ckpt, kind="text")
            hyper = self._checkpoint["hyper_parameters"]
            if hyper.get("task") == "regression":
                raise RecsysError(
                    f"'{name}' is a rating model; the text encoder must be a bert_intent classification "
                    "checkpoint, minilm-packaged, or a Hugging Face encoder folder."
                )
            self.label_names = list(hyper.get("label_names") or [])
            self.identity = {"checkpoint": _file_identity([ckpt]), "pooling": hyper.get("pooling", "mean")}
        else:
            self.location = encoders.resolve_encoder(self.name, "model.text_encoder")
            folder = Path(self.location)
            files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
            self.identity = {"encoder": self.name, "files": _file_identity(files) if files else None}

    @property
    def intents(self) -> bool:
        """Whether this encoder also predicts intents (a ``bert_intent`` checkpoint)."""
        return self._checkpoint is not None

    def _load(self) -> None:
        if self._loaded:
            return
        if self._checkpoint is not None:
            from recsys_cli.checkpoint import build_module

            module = build_module(self._checkpoint).eval()
            self.module = module
            self.encoder, self.tokenizer, self.pooling, self.head = (
                module.encoder,
                module.tokenizer,
                module.pooling,
                module.head,
            )
        else:
            from recsys_cli.models import encoders

            self.encoder, self.tokenizer = encoders.load_pretrained(self.name, "model.text_encoder")
            self.pooling = "mean"
        self.encoder.eval()
        self._loaded = True

    def key(self, texts: list[str]) -> str:
        payload = {
            **self.identity,
            "texts": texts_fingerprint(texts),
            "max_length": self.max_length,
            "version": CACHE_VERSION,
        }
        return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()

    def slug(self) -> str:
        base = Path(self.name).name if checkpoint_path(self.name) is None else "bert_intent"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:40] or "encoder"

    def embed(self, texts: list[str], progress: bool = False, with_intents: bool = False) -> Any:
        """``[N, D]`` float32 pooled embeddings (rows of empty texts are zeros); with ``with_intents``
        also ``[N, C]`` intent probabilities (a ``bert_intent`` checkpoint only, else None)."""
        import torch

        from recsys_cli.core.progress import progress_bar
        from recsys_cli.runtime import inference_autocast

        self._load()
        out = np.zeros((len(texts), int(self.encoder.config.hidden_size)), dtype=np.float32)
        probs = None
        if with_intents and self.head is not None:
            probs = np.zeros((len(texts), len(self.label_names or [])), dtype=np.float32)
        rows = np.array([i for i, text in enumerate(texts) if text], dtype=np.int64)
        order = rows[np.argsort([len(texts[i]) for i in rows], kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with (
            torch.inference_mode(),
            inference_autocast(self.precision),
            progress_bar(progress, len(batches), "encoding text") as advance,
        ):
            for batch in batches:
                tokens = self.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                mask = tokens["attention_mask"]
                hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=mask).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                out[batch] = pooled.float().numpy()
                if probs is not None:
                    probs[batch] = torch.softmax(self.head(pooled).float(), dim=-1).numpy()
                advance()
        return (out, probs) if with_intents else out

    def out_of_scope(self, pooled: np.ndarray) -> np.ndarray | None:
        """Which of the texts (their :meth:`embed` rows) the intent model calls none of its intents, by the rule
        its checkpoint stores (:func:`recsys_cli.evaluation.oos.out_of_scope_rule`; rows of empty texts: False).
        None where there is no such rule: not an intent checkpoint, or it was trained without out-of-scope."""
        import torch

        from recsys_cli.checkpoint import KEY
        from recsys_cli.evaluation import oos

        if self._checkpoint is None:
            return None
        oos_label = self._checkpoint[KEY]["data"].get("oos_label")
        self._load()
        rule, threshold = oos.out_of_scope_rule(self.module, oos_label)
        if rule is None:
            return None
        embeddings = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
        with torch.inference_mode():
            logits = self.head(embeddings).float()
            space = self.module.training_space() if rule in oos.SPACE_METHODS else None
            flags = oos.flag(logits, rule, threshold, oos_label, embeddings, space).numpy()
        return flags & (np.abs(pooled).sum(1) > 0)

    def layer_inputs(self, texts: list[str], n_layers: int) -> dict[str, Any]:
        """What tuning the encoder's top ``n_layers`` layers needs: the hidden states entering them for every
        text (``hidden`` ``[N, T, D]`` bf16, ``T`` the longest text's tokens; rows of empty texts are zeros),
        the token ``mask`` ``[N, T]``, those layers' weights (``layers``: a state dict of an
        ``nn.ModuleList``), the encoder's ``config`` (a plain dict, to rebuild the layers) and ``pooling``.

        The layers below stay frozen, so their output is computed once here; a training step then runs
        only the top layers over the catalogue (:class:`recsys_cli.models.item_repr.TunedText`)."""
        import torch

        from recsys_cli.models.encoders import transformer_layers
        from recsys_cli.runtime import inference_autocast

        self._load()
        layers = transformer_layers(self.encoder)
        if not 1 <= n_layers <= len(layers):
            raise RecsysError(
                f"model.tuned_layers={n_layers} but the text encoder has {len(layers)} layers; pick 1..{len(layers)}."
            )
        if type(self.encoder).__name__ not in TUNABLE:
            raise RecsysError(
                f"tuning the text encoder supports BERT-family encoders ({', '.join(TUNABLE)}), not "
                f"{type(self.encoder).__name__}; set model.text_tuning=frozen."
            )
        tokens = self.tokenizer(
            [text or "" for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        mask = tokens["attention_mask"] * torch.tensor([1 if text else 0 for text in texts]).unsqueeze(1)
        width = max(int(mask.sum(1).max()), 1)
        hidden = torch.zeros(len(texts), width, int(self.encoder.config.hidden_size), dtype=torch.bfloat16)
        rows = torch.nonzero(mask.sum(1) > 0).squeeze(1)
        with torch.inference_mode(), inference_autocast(self.precision):
            for batch in rows.split(self.batch_size):
                length = int(mask[batch].sum(1).max())
                out = self.encoder(
                    input_ids=tokens["input_ids"][batch, :length],
                    attention_mask=mask[batch, :length],
                    output_hidden_states=True,
                )
                hidden[batch, :length] = out.hidden_states[-n_layers - 1].to(torch.bfloat16)
        top = torch.nn.ModuleList(list(layers)[-n_layers:])
        return {
            "hidden": hidden,
            "mask": mask[:, :width].bool(),
            "layers": {key: value.detach().clone() for key, value in top.state_dict().items()},
            "config": self.encoder.config.to_dict(),
            "pooling": self.pooling,
        }


def cached_embeddings(
    folder: Path | None,
    texts: list[str],
    embedder: TextEmbedder,
    progress: bool = False,
    kind: str = "item_text",
    intents: bool = False,
) -> np.ndarray:
    """``embedder.embed(texts)`` (with ``intents``: and the intent probabilities, concatenated), read from
    ``folder/<kind>/`` when it was computed before, else computed and written there atomically (``folder``
    None: computed, not cached)."""

    with_intents = intents and embedder.intents

    def compute() -> np.ndarray:
        if with_intents:
            embeddings, probs = embedder.embed(texts, progress=progress, with_intents=True)
            return np.concatenate([embeddings, probs], axis=1)
        return embedder.embed(texts, progress=progress)

    if folder is None:
        return compute()
    key = embedder.key(texts) + ("-intents" if with_intents else "")
    path = Path(folder) / kind / f"{embedder.slug()}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None  # truncated or foreign: computed again below
        if cached is not None and cached.ndim == 2 and cached.shape[0] == len(texts):  # the key fixes the width
            return cached
    start = time.perf_counter()
    embeddings = compute()
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, embeddings, allow_pickle=False)
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "encoder": embedder.name,
            "texts": len(texts),
            "non_empty": int(sum(1 for text in texts if text)),
            "dim": int(embeddings.shape[1]),
            "intents": embedder.label_names if with_intents else None,
            "max_length": embedder.max_length,
            "seconds": round(seconds, 3),
            "texts_per_second": round(len(texts) / max(seconds, 1e-9), 1),
            "key": key,
        },
    )
    return embeddings


def item_text_features(spec: DataSpec, encoder: str, max_length: int = 64, batch_size: int = 128) -> Any:
    """``spec.item_text_features``: ``[n_items + 1, D]`` embeddings of each item's text by ``encoder`` (row 0 and
    items without text: zeros), computed once per encoder and item text and cached in the processed folder. A
    spec read from a checkpoint already holds them (as model buffers)."""
    import torch

    if spec.item_text_features is None:
        texts = item_text_strings(spec.items, spec.n_items) if spec.items is not None else []
        if not any(texts):
            raise RecsysError(
                "the data has no item text to encode; use data with item titles or text (e.g. data=office, "
                "data=ml100k) or set model.fusion=id."
            )
        embedder = TextEmbedder(encoder, max_length=max_length, batch_size=batch_size)
        spec.item_text_features = torch.from_numpy(cached_embeddings(spec.folder, texts, embedder, progress=True))
        spec.item_text_encoder = encoder
    return spec.item_text_features


def query_features(spec: DataSpec, encoder: str, max_length: int = 64, batch_size: int = 128) -> Any:
    """``spec.query_features``: ``[len(query_texts), D (+ C)]`` embeddings of the data's queries by ``encoder``
    (for a ``bert_intent`` checkpoint: and its intent probabilities), cached in the processed folder; None
    when the data has no queries. An intent checkpoint trained with an out-of-scope label also sets
    ``spec.query_out_of_scope``: which texts it calls none of its intents (its stored rule)."""
    import torch

    if spec.query_texts is None:
        return None
    if spec.query_features is None:
        embedder = TextEmbedder(encoder, max_length=max_length, batch_size=batch_size)
        features = cached_embeddings(spec.folder, spec.query_texts, embedder, True, "query_text", intents=True)
        spec.query_features = torch.from_numpy(features)
        if embedder.intents:
            width = features.shape[1] - len(embedder.label_names or [])
            spec.query_out_of_scope = embedder.out_of_scope(features[:, :width])
            if spec.query_out_of_scope is not None and spec.query_in_training is not None:
                like_training(spec, spec.query_features[:, :width])
    return spec.query_features


def like_training(spec: DataSpec, embeddings: Any) -> None:
    """``spec.query_like_training`` and ``spec.query_floor``: which queries are training events' queries or lie
    near one (cosine to the nearest at least the floor of :func:`recsys_cli.evaluation.oos.training_query_floor`):
    the recommender has learned what such words lead to, even where the intent model knows none of its intents."""
    import torch

    from recsys_cli.evaluation.oos import near_training

    seen = torch.from_numpy(np.asarray(spec.query_in_training, dtype=bool)) & (embeddings.abs().sum(1) > 0)
    near, spec.query_floor = near_training(embeddings, embeddings[seen])
    spec.query_like_training = (seen | near).numpy()


def item_text_layers(
    spec: DataSpec, encoder: str, n_layers: int, max_length: int = 64, batch_size: int = 128
) -> dict[str, Any]:
    """``layer_inputs`` of every item's text (:meth:`TextEmbedder.layer_inputs`) for tuning the text encoder's
    top ``n_layers`` layers; a spec read from a checkpoint holds the hidden states and mask already (as
    model buffers, with the tuned layers' weights), so only their shapes and the stored config are used."""
    if spec.item_text_hidden is None:
        texts = item_text_strings(spec.items, spec.n_items) if spec.items is not None else []
        embedder = TextEmbedder(encoder, max_length=max_length, batch_size=batch_size)
        inputs = embedder.layer_inputs(texts, n_layers)
        spec.item_text_hidden, spec.item_text_mask = inputs["hidden"], inputs["mask"]
        return inputs
    return {
        "hidden": spec.item_text_hidden,
        "mask": spec.item_text_mask,
        "layers": None,
        "config": None,
        "pooling": None,
    }
