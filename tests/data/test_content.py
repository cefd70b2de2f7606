"""Item text → encoder embeddings: the strings, the cache and its key."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_cli.data.content import TextEmbedder, cached_embeddings, item_text_strings


def test_item_text_joins_title_text_and_category_once_per_item():
    items = pd.DataFrame(
        {
            "item_idx": [1, 2, 3],
            "title": ["Red pen", "Stapler", ""],
            "text": ["Red pen", "Heavy duty stapler Swingline", ""],
            "category": ["Pens", "Staplers", ""],
        }
    )
    texts = item_text_strings(items, 3)
    assert texts == ["", "Red pen Pens", "Stapler Heavy duty stapler Swingline Staplers", ""]


def test_embeddings_are_computed_once_and_cached_per_encoder_and_text(tiny_encoder, tmp_path):
    texts = ["", "a gift for a runner", "running shoes", "a gift for a runner"]
    embedder = TextEmbedder(str(tiny_encoder), max_length=16, batch_size=2)
    first = cached_embeddings(tmp_path, texts, embedder)
    assert first.shape == (4, 32) and first.dtype == np.float32  # the tiny encoder's width
    assert np.all(first[0] == 0)  # empty text: zeros
    assert np.allclose(first[1], first[3], atol=1e-2)  # same text, same embedding (batching does not matter)
    files = sorted((tmp_path / "item_text").glob("*.npy"))
    assert len(files) == 1

    fresh = TextEmbedder(str(tiny_encoder), max_length=16, batch_size=2)
    assert np.array_equal(cached_embeddings(tmp_path, texts, fresh), first)
    assert not fresh._loaded  # a cache hit never loads the encoder's weights

    changed = cached_embeddings(tmp_path, [*texts[:3], "a new item"], embedder)
    assert len(sorted((tmp_path / "item_text").glob("*.npy"))) == 2  # other texts, another key
    assert np.array_equal(changed[:3], first[:3])

    files[0].write_bytes(b"truncated")  # a damaged cache is recomputed, not trusted
    assert np.array_equal(cached_embeddings(tmp_path, texts, embedder), first)
