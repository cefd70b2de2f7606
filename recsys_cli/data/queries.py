"""What users say: the free-text query each event answers, from whatever the data holds.

Three layouts are read: an interaction column ``query`` (any log whose events carry the user's words);
sessions: an interaction column ``session_id`` and an extra table ``queries`` (``session_id``, ``query``),
as the synthetic shop writes (each session opens with a query; every click of the session answers it); or
reviews: an interaction column ``review`` (what the user wrote of the event's item, after it, as in Amazon
review data), where each event gets the user's latest earlier review (their own words about what they
bought last), never its own (written after the event).
The result is a vocabulary of distinct query strings (index 0: no query) and one index per event, in the
order of the processed interactions, so the datamodule can carry the query of every history item and
target alongside the items.

``session_starts`` marks events that open a session (the first event of a user, or the first after a
change of ``session_id``): where only the query can tell what the user wants next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUERY = "query"
REVIEW = "review"
SESSION = "session_id"


def event_queries(interactions: pd.DataFrame, extra: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """``(texts, index per event)`` with ``texts[0] == ""``, or None when the data holds no queries."""
    if QUERY in interactions.columns:
        raw = interactions[QUERY]
    elif SESSION in interactions.columns and QUERY in getattr(extra.get("queries"), "columns", []):
        table = extra["queries"].drop_duplicates(SESSION, keep="first").set_index(SESSION)[QUERY]
        raw = interactions[SESSION].map(table)
    elif REVIEW in interactions.columns:
        found = _vocabulary(interactions[REVIEW])
        if found is None:
            return None
        texts, codes = found
        users = interactions["user_idx"].to_numpy()
        written = pd.Series(np.where(codes > 0, codes, np.nan))
        latest = written.groupby(users).ffill().groupby(users).shift(1)  # the latest review before each event
        return texts, latest.fillna(0).to_numpy().astype(np.int64)
    else:
        return None
    return _vocabulary(raw)


def _vocabulary(raw: pd.Series) -> tuple[list[str], np.ndarray] | None:
    """Distinct non-empty texts (index 0: none) and each row's index, or None when every text is empty."""
    text = raw.fillna("").astype(str).str.strip()
    codes, uniques = pd.factorize(text.where(text != "", None), sort=False)  # missing: -1
    if len(uniques) == 0:
        return None
    return ["", *uniques.astype(str).tolist()], (codes + 1).astype(np.int64)


def next_queries(interactions: pd.DataFrame, n_users: int) -> np.ndarray | None:
    """Reviews only: per user index, the index of the user's latest review (the words that go with their next
    event, as :func:`event_queries` numbers them); None for other layouts (a next event's query is unknown)."""
    if REVIEW not in interactions.columns or QUERY in interactions.columns:
        return None
    found = _vocabulary(interactions[REVIEW])
    if found is None:
        return None
    codes = found[1]
    written = codes > 0
    out = np.zeros(n_users + 1, dtype=np.int64)
    users = interactions["user_idx"].to_numpy()[written]
    out[users] = codes[written]  # events are in time order per user: the last write wins
    return out


def session_starts(interactions: pd.DataFrame) -> np.ndarray | None:
    """Per event: does it open a session (no earlier event of the user in the same session)? None without sessions."""
    if SESSION not in interactions.columns:
        return None
    users = interactions["user_idx"].to_numpy()
    sessions = interactions[SESSION].to_numpy()
    new = np.ones(len(users), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (sessions[1:] != sessions[:-1])
    return new
