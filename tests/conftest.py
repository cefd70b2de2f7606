"""Shared fixtures: a tiny synthetic shop and small models, so end-to-end tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_DATA = [
    "data=synthetic",
    "data.source.n_users=120",
    "data.source.n_categories=4",
    "data.source.items_per_category=12",
    "data.max_len=20",
    "data.batch_size=64",
]
TINY_MODEL = ["model.hidden_size=16", "model.inner_size=32", "model.num_heads=1", "model.num_layers=1"]


@pytest.fixture
def workdir(tmp_path: Path) -> list[str]:
    """Overrides that keep processed data and runs inside the test's temporary folder."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.runs_dir={tmp_path / 'runs'}"]


@pytest.fixture
def tiny(workdir: list[str]) -> list[str]:
    return [*workdir, *TINY_DATA, "trainer=debug", "logger=none"]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real-data tests run where ../shared/data exists)")
    return path


TINY_TEXT = [
    "data=synthetic",
    "data.source.n_users=150",
    "data.source.n_categories=4",
    "data.text.batch_size=16",
]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer BERT (hidden 32) with a word-level vocabulary of the synthetic queries.

    Built in-process and saved as a Hugging Face model folder, as `model.encoder=<folder>` expects; no hub.
    """
    import re

    from transformers import BertConfig, BertModel, BertTokenizer

    from recsys_cli.data.synthetic import generate_shop

    queries = generate_shop(n_users=200, n_categories=12).extra["queries"]["query"]
    words = sorted({w for text in queries for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
