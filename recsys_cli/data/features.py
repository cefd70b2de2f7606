"""Item side features for models that read them (e.g. the two-tower model's item tower).

Each item's title, text and category are lower-cased and split into words; the most frequent words
form a vocabulary (index 0 = padding), and every item becomes a fixed-width row of word indices. The
matrix is data: :meth:`recsys_cli.data.spec.DataSpec.item_word_features` derives it for the models that
ask (``item_features``), and a checkpoint stores it as a model buffer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("title", "text", "category")


def item_feature_tokens(items: pd.DataFrame, n_items: int, max_tokens: int = 16, vocab_size: int = 20000) -> np.ndarray:
    """``[n_items + 1, max_tokens]`` word indices per item (row = item index; 0 = padding/no feature)."""
    columns = [c for c in TEXT_COLUMNS if c in items.columns]
    out = np.zeros((n_items + 1, max_tokens), dtype=np.int64)
    if not columns or items.empty:
        return out
    text = items[columns].fillna("").astype(str).agg(" ".join, axis=1).str.lower()
    words = text.str.findall(r"[a-z0-9]+")
    exploded = words.explode().dropna()
    exploded = exploded[exploded != ""]
    if exploded.empty:
        return out
    vocab = exploded.value_counts().index[: vocab_size - 1]
    token = pd.Index(vocab).get_indexer(exploded.to_numpy()) + 1  # 0 = not in vocabulary / padding
    frame = pd.DataFrame({"row": items["item_idx"].to_numpy()[exploded.index.to_numpy()], "token": token})
    frame = frame[frame["token"] > 0].drop_duplicates()
    frame["pos"] = frame.groupby("row").cumcount()
    frame = frame[frame["pos"] < max_tokens]
    out[frame["row"].to_numpy(), frame["pos"].to_numpy()] = frame["token"].to_numpy()
    return out
