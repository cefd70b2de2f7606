"""What every data source hands to preprocessing: plain tables with canonical column names."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# Canonical column names shared by all sources, preprocessing and predict.
USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
RATING = "rating"
TITLE = "title"
TEXT = "text"


@dataclass
class SourceData:
    """Raw tables read by a source, before any cleaning.

    interactions: one row per event with ``user_id``, ``item_id``, ``timestamp`` (numeric, any unit),
        optionally ``rating`` and other columns (kept as they are, e.g. ``session_id``, ``intent``).
    items: optional item side table keyed by ``item_id`` with ``title`` and optional ``text``,
        ``category`` and other columns.
    users: optional user side table keyed by ``user_id``.
    extra: further named tables a source provides (the synthetic shop's ``queries``).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
