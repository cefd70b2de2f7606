"""Preprocessing: clean, filter, index and split interactions; write a processed folder once.

Every step is a vectorised numpy/pandas operation, so the cost grows linearly with the input:
drop rows with missing ids or times → drop exact duplicates → optional rating threshold (implicit
feedback) → optional fixed item vocabulary (a checkpoint's) → iterative k-core → stable chronological
sort → contiguous ids (0 is padding) → split. The processed folder holds ``interactions.parquet``
(``user_idx, item_idx, timestamp, [rating], split, ...``), ``items.parquet``, ``users.parquet``, any
extra tables, and ``meta.json`` (source, counts, config, fingerprint). It is reused while the input
and the config are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli.data.base import ITEM, RATING, TEXT, TIME, TITLE, USER, SourceData
from recsys_cli.errors import RecsysError, warn
from recsys_cli.io import atomic_folder

SCHEMA_VERSION = 2  # bump when processing changes its output: 2 reads ids as text (CSV "007" is not 7)
TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


SPLIT_KINDS = ("leave_one_out", "temporal", "random")


@dataclass
class PreprocessConfig:
    rating_threshold: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    split: str = "leave_one_out"  # one of SPLIT_KINDS
    valid_ratio: float = 0.1
    test_ratio: float = 0.1
    split_seed: int = 0  # random split only

    def __post_init__(self) -> None:
        if self.split not in SPLIT_KINDS:
            raise RecsysError(f"unknown split '{self.split}'; set data.split.kind=leave_one_out, temporal or random.")
        if self.split in ("temporal", "random") and not (
            0 < self.valid_ratio and 0 < self.test_ratio and self.valid_ratio + self.test_ratio < 1
        ):
            raise RecsysError(
                f"{self.split} split ratios must be positive and sum below 1; "
                "set data.split.valid_ratio and data.split.test_ratio."
            )

    def fingerprint_fields(self) -> dict[str, Any]:
        """The fields that decide the processed data: the seed only matters to a random split, so
        the other splits keep the fingerprints they had before it existed."""
        fields = dict(self.__dict__)
        if self.split != "random":
            fields.pop("split_seed")
        return fields


@dataclass
class Processed:
    """A processed dataset held in memory (what the datamodule and predict consume)."""

    path: Path
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    meta: dict[str, Any]
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Items held out of training for cold-start evaluation (recsys_cli.evaluation.cold_start), if any.
    cold_start: dict[str, Any] | None = None

    @property
    def n_items(self) -> int:
        return int(self.meta["counts"]["items"])

    @property
    def n_users(self) -> int:
        return int(self.meta["counts"]["users"])


def train_item_counts(processed: Processed) -> np.ndarray:
    """Popularity in the training split, indexed by item index (0 = padding)."""
    inter = processed.interactions
    items = inter["item_idx"].to_numpy().astype(np.int64)
    return np.bincount(items[inter["split"].to_numpy() == TRAIN], minlength=processed.n_items + 1)


def fingerprint(
    source_fp: str, config: PreprocessConfig, item_vocab: list[str] | None, user_vocab: list[str] | None = None
) -> str:
    digest = hashlib.blake2b(digest_size=16)
    payload = {"source": source_fp, "config": config.fingerprint_fields(), "schema": SCHEMA_VERSION}
    digest.update(json.dumps(payload, sort_keys=True).encode())
    if item_vocab is not None:
        digest.update("\x1f".join(item_vocab).encode())
    if user_vocab is not None:
        digest.update(b"\x1e" + "\x1f".join(user_vocab).encode())
    return digest.hexdigest()


def normalise_text(values: pd.Series) -> pd.Series:
    """Unicode NFKC, collapsed whitespace, stripped; missing becomes empty."""
    text = values.fillna("").astype(str)
    text = text.map(lambda s: unicodedata.normalize("NFKC", s)) if len(text) else text
    return text.str.replace(r"\s+", " ", regex=True).str.strip()


def id_tokens(values: pd.Series) -> pd.Series:
    """Ids as tokens (strings; missing stays missing): text as written without surrounding whitespace (blank
    is missing), whole numbers without a decimal point. So JSON's 7, a Parquet float column's 7.0 (an integer
    column with gaps) and a CSV's "7" or " 7" are one id, while the CSV texts "7.0" and "007" are two others
    (CSV ids are read as text, never guessed to be numbers)."""
    index = values.index
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
        present = values.notna().to_numpy()
        tokens = np.full(len(values), np.nan, dtype=object)
        tokens[present] = values[present].to_numpy().astype(str)
        return pd.Series(tokens, index=index, dtype=object)
    if pd.api.types.is_float_dtype(values):
        return pd.Series(_number_tokens(values.to_numpy(dtype=np.float64, na_value=np.nan)), index=index, dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        # JSON ids of several types in one column (7 and "a7"): the rare case that needs a look at each value.
        values = values.map(_id_token, na_action="ignore")
    text = values.astype(object).where(values.notna()).str.strip()
    return text.where(text != "").astype(object)


def _number_tokens(numbers: np.ndarray) -> np.ndarray:
    finite = np.isfinite(numbers)  # inf and nan are no ids
    whole = finite.copy()
    whole[finite] = (np.mod(numbers[finite], 1) == 0) & (np.abs(numbers[finite]) < 2**63)
    tokens = np.full(len(numbers), np.nan, dtype=object)
    tokens[whole] = numbers[whole].astype(np.int64).astype(str)
    tokens[finite & ~whole] = numbers[finite & ~whole].astype(str)
    return tokens


def _id_token(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, float | np.floating):
        return _number_tokens(np.asarray([value], dtype=np.float64))[0]
    return str(value)


# Times beyond this many units since the epoch are no times (int64 nanoseconds end at 9.2e18).
MAX_TIME = 9e18


def _numeric_time(column: pd.Series) -> pd.Series:
    """Event times as float seconds (or whatever unit the numbers are in); missing, inf and nan are missing."""
    if pd.api.types.is_numeric_dtype(column):
        numeric = column.astype("float64")
    else:
        numeric = pd.to_numeric(column, errors="coerce").astype("float64")
        not_number = numeric.isna() & column.notna()
        if not_number.any():
            numeric = _date_seconds(column, not_number)
    numeric = numeric.where(np.isfinite(numeric))
    too_large = numeric.abs() > MAX_TIME
    if too_large.any():
        raise RecsysError(
            f"timestamp {numeric[too_large].iloc[0]:g} is out of range; give epoch seconds (or milliseconds) "
            "or ISO dates, or map another column with data.source.columns.time."
        )
    return numeric


def _date_seconds(column: pd.Series, not_number: pd.Series) -> pd.Series:
    """A time column that is not all numbers: ISO dates / datetimes as seconds since the epoch."""
    dates = pd.to_datetime(column.where(not_number).astype(object), errors="coerce", utc=True, format="mixed")
    neither = not_number & dates.isna()
    if neither.any():
        raise RecsysError(
            f"timestamp column has non-numeric values that are no dates either (e.g. '{column[neither].iloc[0]}'); "
            "give numbers (epoch seconds) or ISO dates, or map another column with data.source.columns.time."
        )
    numbers = column.notna() & ~not_number
    if numbers.any():
        raise RecsysError(
            f"timestamp column mixes numbers (e.g. '{column[numbers].iloc[0]}') and dates (e.g. "
            f"'{column[not_number].iloc[0]}'); give every time one way: epoch seconds or ISO dates."
        )
    # In the dates' own resolution: year 2999 is past what nanoseconds (pandas' default) can hold.
    seconds = (dates - pd.Timestamp(0, tz="UTC").as_unit(dates.dt.unit)) // pd.Timedelta(seconds=1)
    return seconds.astype("float64")


def kcore(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Iterative k-core: boolean mask of rows kept once every user and item meets its minimum."""
    keep = np.ones(len(users), dtype=bool)
    if (min_user <= 1 and min_item <= 1) or len(users) == 0:
        return keep
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    while True:
        user_counts = np.bincount(users[keep], minlength=n_users)
        item_counts = np.bincount(items[keep], minlength=n_items)
        bad = keep & ((user_counts[users] < min_user) | (item_counts[items] < min_item))
        if not bad.any():
            return keep
        keep &= ~bad


def split_labels(user_idx: np.ndarray, timestamps: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Per-row split (0 train, 1 valid, 2 test) for rows sorted by user then time."""
    if config.split == "temporal":
        t_valid, t_test = np.quantile(timestamps, [1 - config.valid_ratio - config.test_ratio, 1 - config.test_ratio])
        labels = np.where(timestamps >= t_test, TEST, np.where(timestamps >= t_valid, VALID, TRAIN))
        return labels.astype(np.int8)
    if config.split == "random":
        return random_split(user_idx, config.valid_ratio, config.test_ratio, config.split_seed)
    # Leave-one-out by time: a user's last event is test, the one before is validation; users with
    # fewer than 3 events have nothing to hold out and stay in training.
    counts = np.bincount(user_idx)
    ends = np.cumsum(counts)[user_idx]  # one past each row's user block
    from_end = ends - 1 - np.arange(len(user_idx))
    eligible = counts[user_idx] >= 3
    labels = np.full(len(user_idx), TRAIN, dtype=np.int8)
    labels[eligible & (from_end == 0)] = TEST
    labels[eligible & (from_end == 1)] = VALID
    return labels


def random_split(user_idx: np.ndarray, valid_ratio: float, test_ratio: float, seed: int) -> np.ndarray:
    """Each event independently to test / valid / train with the given ratios (seeded), for models that
    ignore order (BPR, ItemKNN, ...). A user whose events all land in valid/test keeps the first one in
    training, so every evaluated user has a history (and a trained embedding) to be ranked from.
    Rows are sorted by user then time, so the same data and seed give the same split."""
    draw = np.random.default_rng(seed).random(len(user_idx))
    labels = np.where(draw < test_ratio, TEST, np.where(draw < test_ratio + valid_ratio, VALID, TRAIN)).astype(np.int8)
    train_counts = np.bincount(user_idx[labels == TRAIN], minlength=int(user_idx.max()) + 1)
    first = np.concatenate([[True], user_idx[1:] != user_idx[:-1]])
    labels[first & (train_counts[user_idx] == 0)] = TRAIN
    return labels


def preprocess(
    data: SourceData,
    config: PreprocessConfig,
    item_vocab: list[str] | None = None,
    user_vocab: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Clean, filter, index and split. Returns (interactions, items, users, stats).

    ``item_vocab``: index items by this vocabulary (a checkpoint's) and drop events on other items.
    ``user_vocab``: users in it keep their index there (a checkpoint's), the others get indices after
    it, so a model's per-user parameters are read for the right users and new users are recognisably new.
    """
    frame = data.interactions
    for column in (USER, ITEM, TIME):
        if column not in frame.columns:
            raise RecsysError(f"interactions have no '{column}' column; map it in data.source.columns.")
    if len(frame) == 0:
        raise RecsysError("the interaction data has no rows; check data.path.")
    raw_rows = len(frame)
    dropped: dict[str, int] = {}
    time = _numeric_time(frame[TIME])
    rating = None
    if RATING in frame.columns:  # an unreadable, infinite or nan rating is no rating: a threshold drops it
        rating = pd.to_numeric(frame[RATING], errors="coerce").astype("float64")
        rating = rating.where(np.isfinite(rating))

    # Ids are tokens: compare them as strings so "1" and 1 from different files agree.
    user_tokens, item_tokens = id_tokens(frame[USER]), id_tokens(frame[ITEM])
    missing = user_tokens.isna().to_numpy() | item_tokens.isna().to_numpy() | time.isna().to_numpy()
    dropped["missing id or time"] = int(missing.sum())
    user_str = user_tokens.fillna("").to_numpy(dtype=object)
    item_str = item_tokens.fillna("").to_numpy(dtype=object)
    user_codes, user_uniques = pd.factorize(user_str, sort=True)
    item_codes, item_uniques = pd.factorize(item_str, sort=True)
    keep = ~missing

    key = pd.DataFrame({"u": user_codes, "i": item_codes, "t": time.to_numpy()})
    if rating is not None:
        key["r"] = rating.to_numpy()
    duplicate = key.duplicated().to_numpy() & keep
    dropped["exact duplicate"] = int(duplicate.sum())
    keep &= ~duplicate

    if config.rating_threshold is not None:
        if rating is None:
            raise RecsysError(
                "data.preprocess.rating_threshold is set but the data has no rating column; "
                "map one in data.source.columns.rating or set the threshold to null."
            )
        low = keep & ~(rating.to_numpy() >= config.rating_threshold)
        dropped["below rating threshold"] = int(low.sum())
        keep &= ~low

    if item_vocab is not None:
        known = np.isin(item_uniques, np.asarray(item_vocab, dtype=object))
        unknown = keep & ~known[item_codes]
        dropped["item not in vocabulary"] = int(unknown.sum())
        keep &= ~unknown

    rows = np.flatnonzero(keep)
    core = kcore(user_codes[rows], item_codes[rows], config.min_user_interactions, config.min_item_interactions)
    dropped["k-core"] = int((~core).sum())
    rows = rows[core]
    if len(rows) == 0:
        raise RecsysError(
            "no interactions left after filtering; lower data.preprocess.min_user_interactions / "
            "min_item_interactions or the rating threshold."
        )

    # Contiguous ids in sorted-token order; 0 is kept for padding.
    kept_users, user_idx = np.unique(user_codes[rows], return_inverse=True)
    if item_vocab is None:
        kept_items, item_idx = np.unique(item_codes[rows], return_inverse=True)
        item_ids = item_uniques[kept_items].astype(str)
        item_idx = item_idx + 1
    else:
        item_ids = np.asarray(item_vocab, dtype=object).astype(str)
        position = pd.Index(item_ids).get_indexer(item_uniques[item_codes[rows]])
        item_idx = position + 1
    user_index = np.arange(1, len(kept_users) + 1)
    if user_vocab is not None:
        position = pd.Index(np.asarray(user_vocab, dtype=object).astype(str)).get_indexer(
            user_uniques[kept_users].astype(str)
        )
        new = position < 0
        user_index = np.where(new, len(user_vocab) + np.cumsum(new), position + 1)
    user_idx = user_index[user_idx]
    timestamps = time.to_numpy()[rows]
    order = np.lexsort((timestamps, user_idx))  # stable: ties keep their input order
    rows, user_idx, item_idx, timestamps = rows[order], user_idx[order], item_idx[order], timestamps[order]

    interactions = pd.DataFrame(
        {
            "user_idx": user_idx.astype(np.int32),
            "item_idx": item_idx.astype(np.int32),
            TIME: timestamps.astype(np.int64) if np.all(np.mod(timestamps, 1) == 0) else timestamps,
        }
    )
    if rating is not None:
        interactions[RATING] = rating.to_numpy()[rows].astype(np.float32)
    for column in frame.columns:
        if column not in (USER, ITEM, TIME, RATING):
            interactions[column] = frame[column].to_numpy()[rows]
    interactions["split"] = split_labels(user_idx, timestamps, config)

    items = _item_table(item_ids, data.items)
    users = pd.DataFrame({"user_idx": user_index.astype(np.int32), USER: user_uniques[kept_users].astype(str)})
    if data.users is not None and USER in data.users.columns:
        side = data.users.assign(**{USER: id_tokens(data.users[USER])}).dropna(subset=[USER]).drop_duplicates(USER)
        users = users.merge(side, on=USER, how="left")

    n_users, n_items, n_rows = len(users), len(items), len(interactions)
    stats = {
        "raw_rows": raw_rows,
        "dropped": dropped,
        "counts": {
            "users": n_users,
            "items": n_items,
            "interactions": n_rows,
            "density": n_rows / max(1, n_users * n_items),
        },
        "splits": {SPLIT_NAMES[k]: int((interactions["split"] == k).sum()) for k in SPLIT_NAMES},
    }
    return interactions, items, users, stats


def _item_table(item_ids: np.ndarray, side: pd.DataFrame | None) -> pd.DataFrame:
    items = pd.DataFrame({"item_idx": np.arange(1, len(item_ids) + 1, dtype=np.int32), ITEM: item_ids})
    if side is not None and ITEM in side.columns:
        side = side.assign(**{ITEM: id_tokens(side[ITEM])}).dropna(subset=[ITEM]).drop_duplicates(ITEM, keep="last")
        items = items.merge(side, on=ITEM, how="left")
    for column in (TITLE, TEXT):
        items[column] = normalise_text(items[column]) if column in items.columns else ""
    return items


def _write_folder(final: Path, tables: dict[str, pd.DataFrame], meta: dict[str, Any]) -> None:
    """Write every table into a temporary sibling folder, then rename it into place."""
    with atomic_folder(final) as tmp:
        for name, table in tables.items():
            table.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def load_processed(path: Path) -> Processed:
    meta = json.loads((path / "meta.json").read_text())
    extra = {name: pd.read_parquet(path / f"{name}.parquet") for name in meta.get("extra_tables", [])}
    return Processed(
        path=path,
        interactions=pd.read_parquet(path / "interactions.parquet"),
        items=pd.read_parquet(path / "items.parquet"),
        users=pd.read_parquet(path / "users.parquet"),
        meta=meta,
        extra=extra,
    )


def processed_folder(data_dir: str | os.PathLike, name: str, data_fingerprint: str) -> Path:
    """Where the processed data of dataset ``name`` with this fingerprint lives."""
    return Path(data_dir) / "processed" / f"{name}-{data_fingerprint[:12]}"


def open_processed(folder: Path, data_fingerprint: str) -> Processed | None:
    """The processed data in ``folder`` if it is the data of that fingerprint, else None (absent, other, or
    damaged: a truncated or edited table is reported and the folder is built again from the raw data)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != data_fingerprint:
        return None
    try:
        return load_processed(folder)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, a missing column: any damage means rebuild
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        warn(f"the processed data in {folder} is damaged ({reason}); building it again from the raw data.")
        return None


def prepare(
    name: str,
    source: Any,
    config: PreprocessConfig,
    data_dir: str | os.PathLike,
    item_vocab: list[str] | None = None,
    force: bool = False,
    user_vocab: list[str] | None = None,
    source_fingerprint: str | None = None,
) -> tuple[Processed, bool]:
    """Load the processed folder for this input and config, building it first if needed.

    ``source_fingerprint``: ``source.fingerprint()`` when the caller already has it (it hashes every input
    file). Returns the processed data and whether an existing folder was reused.
    """
    source_fp = source_fingerprint or source.fingerprint()
    fp = fingerprint(source_fp, config, item_vocab, user_vocab)
    folder = processed_folder(data_dir, name, fp)
    if not force and (processed := open_processed(folder, fp)) is not None:
        return processed, True
    raw = source.load()
    interactions, items, users, stats = preprocess(raw, config, item_vocab, user_vocab)
    meta = {
        "name": name,
        "source": source.describe(),
        "fingerprint": fp,
        "source_fingerprint": source_fp,
        "config": config.__dict__,
        "schema": SCHEMA_VERSION,
        "extra_tables": sorted(raw.extra),
        **stats,
    }
    _write_folder(folder, {"interactions": interactions, "items": items, "users": users, **raw.extra}, meta)
    return load_processed(folder), False
