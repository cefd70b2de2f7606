"""Batches of tokenised texts for transformer encoders.

Each split is tokenised once with a batched ``datasets.map`` whose Arrow result is cached on disk (keyed
by the data fingerprint, the tokenizer and ``max_length``), then held as one flat token array with row
offsets. A batch is cut from it and padded to its own longest text (dynamic padding), and training
batches group texts of similar length (as Hugging Face's ``group_by_length``), so on a CPU the cost
follows the tokens, not ``max_length``. With a frozen encoder, :meth:`TextDataModule.cache_features`
swaps token batches for the encoder's pooled outputs, computed once, so later epochs train the head only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from recsys_cli.data import batch as keys
from recsys_cli.data.datamodule import LengthGroupedSampler


def _identity(batch: Any) -> Any:
    return batch


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Changes when the vocabulary or the tokenizer's settings change."""
    state = json.dumps(
        {"class": type(tokenizer).__name__, "vocab": len(tokenizer), "name": getattr(tokenizer, "name_or_path", "")},
        sort_keys=True,
    )
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(state.encode())
    digest.update(json.dumps(sorted(vocab.items())[:5000]).encode())
    return digest.hexdigest()[:12]


class TokenizedTexts(Dataset):
    """One split: flat token ids with row offsets, labels, and (after caching) pooled features."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: torch.Tensor, pad_id: int) -> None:
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.offsets = offsets.astype(np.int64)
        self.lengths = np.diff(self.offsets)
        self.labels = labels
        self.pad_id = pad_id
        self.features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def token_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` of ``rows``, as long as their longest text."""
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        positions = np.arange(width)
        present = positions[None, :] < lengths[:, None]
        gather = np.where(present, self.offsets[rows][:, None] + positions[None, :], 0)
        input_ids = torch.where(torch.from_numpy(present), self.ids[torch.from_numpy(gather)], self.pad_id)
        return {keys.INPUT_IDS: input_ids, keys.ATTENTION_MASK: torch.from_numpy(present.astype(np.int64))}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        batch = (
            {keys.FEATURES: self.features[torch.from_numpy(rows)]}
            if self.features is not None
            else self.token_batch(rows)
        )
        batch[keys.LABELS] = self.labels[torch.from_numpy(rows)]
        batch[keys.INDEX] = torch.from_numpy(rows)
        return batch


def tokenize_split(
    texts: list[str], tokenizer: Any, max_length: int, cache_file: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (flat) and row offsets, via a batched, cached ``datasets.map``."""
    import datasets

    if not texts:  # an empty split (a tiny dataset): datasets.map would give a table without the column
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    datasets.disable_progress_bars()
    table = datasets.Dataset.from_dict({"text": texts})
    kwargs: dict[str, Any] = {}
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"cache_file_name": str(cache_file), "load_from_cache_file": True}
    tokenized = table.map(
        lambda rows: {"input_ids": tokenizer(rows["text"], truncation=True, max_length=max_length)["input_ids"]},
        batched=True,
        batch_size=2000,
        remove_columns=["text"],
        **kwargs,
    )
    column = tokenized.data.column("input_ids").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False), column.offsets.to_numpy()


class TextDataModule(pl.LightningDataModule):
    """Train/valid/test texts with labels (class indices, or float targets for regression)."""

    def __init__(
        self,
        splits: Any,
        tokenizer: Any,
        max_length: int = 64,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        group_by_length: bool = True,
        seed: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.group_by_length = bool(group_by_length)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.data: dict[str, TokenizedTexts] = {}

    def labels_of(self, split: str) -> torch.Tensor:
        frame = getattr(self.splits, split)
        if self.splits.task == "regression":
            return torch.tensor(frame["label"].to_numpy(dtype=np.float32))
        return torch.tensor(frame["label"].to_numpy(dtype=np.int64))

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        key = f"{self.splits.fingerprint}-{tokenizer_fingerprint(self.tokenizer)}-{self.max_length}"
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for split in ("train", "valid", "test"):
            texts = getattr(self.splits, split)["text"].tolist()
            cache = self.cache_dir / f"{key}-{split}.arrow" if self.cache_dir is not None else None
            ids, offsets = tokenize_split(texts, self.tokenizer, self.max_length, cache)
            self.data[split] = TokenizedTexts(ids, offsets, self.labels_of(split), pad_id)

    def encode_texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """One padded token batch of a few ad-hoc texts (label names, prompts)."""
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {keys.INPUT_IDS: encoded["input_ids"], keys.ATTENTION_MASK: encoded["attention_mask"]}

    @torch.inference_mode()
    def embed_split(
        self,
        split: str,
        embed: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        batch_size: int = 128,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """``embed(batch)`` of every row of ``split``, in row order, float32 on the CPU (cached features are
        passed through as they are)."""
        self.setup()
        dataset = self.data[split]
        if dataset.features is not None:
            return embed({keys.FEATURES: dataset.features.to(device)}).float().cpu()
        order = np.argsort(dataset.lengths, kind="stable")  # similar lengths together: little padding
        features: torch.Tensor | None = None
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            batch = {name: values.to(device) for name, values in dataset.token_batch(rows).items()}
            output = embed(batch).float().cpu()
            if features is None:
                features = torch.empty(len(dataset), output.shape[1])
            features[torch.from_numpy(rows)] = output
        return features if features is not None else torch.empty(0, 0)

    def cache_features(self, embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch_size: int = 128) -> None:
        """Replace each split's token batches by ``embed(batch)`` computed once (frozen encoders)."""
        self.setup()
        for split, dataset in self.data.items():
            dataset.features = self.embed_split(split, embed, batch_size) if len(dataset) else None

    def _loader(self, dataset: TokenizedTexts, batch_size: int, train: bool) -> DataLoader:
        sampler = None
        if train and self.group_by_length and dataset.features is None:
            sampler = LengthGroupedSampler(dataset.lengths, batch_size, seed=self.seed)
        elif not train:
            # Evaluation order by length (less padding); metrics do not depend on the order.
            sampler = np.argsort(dataset.lengths, kind="stable").tolist()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            collate_fn=_identity,
            num_workers=self.num_workers,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data["train"], self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data["valid"], self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data["test"], self.eval_batch_size, train=False)
