"""Per-user metric files: one Parquet row per evaluated user, for significance tests between runs.

Format (``recsys compare`` pairs runs on ``user_id``): ``user_id`` (the dataset's own id, string),
``user_idx`` (int64), then one float64 column per per-user metric (``ndcg@10``, ``hr@10``, ...,
``novelty@10``, ``arp@10``), rows sorted by ``user_idx``. The mean of a column is the split's number in
``metrics.json``. List-level metrics (coverage) have no per-user value and are not in the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_cli.io import atomic_path

SPLIT_FILES = {"val": "valid", "test": "test"}


def per_user_frame(per_user: dict[str, torch.Tensor], user_ids: Sequence[str]) -> pd.DataFrame:
    """The per-user table of one split; ``user_ids[user_idx]`` is the dataset id (index 0 = padding)."""
    users = per_user["user"].long().numpy()
    order = np.argsort(users, kind="stable")
    ids = np.asarray(user_ids, dtype=object)
    columns = {"user_id": ids[users[order]].astype(str), "user_idx": users[order].astype(np.int64)}
    for name, values in per_user.items():
        if name != "user":
            columns[name] = values.double().numpy()[order]
    return pd.DataFrame(columns)


def write_per_user(
    per_user: dict[str, dict[str, torch.Tensor]], user_ids: Sequence[str], folder: str | os.PathLike
) -> dict[str, str]:
    """Write ``<folder>/valid.parquet`` and ``<folder>/test.parquet`` atomically; return ``{split: path}``."""
    paths = {}
    for prefix, name in SPLIT_FILES.items():
        if prefix not in per_user:
            continue
        path = Path(folder) / f"{name}.parquet"
        frame = per_user_frame(per_user[prefix], user_ids)
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
        paths[name] = str(path)
    return paths
