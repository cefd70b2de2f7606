"""Text sources and splits for the intent encoder (``model=bert_intent``) and the rating regressor.

A text source reads one format into a frame with the canonical columns ``text``, ``label`` and, where the
data ships official splits, ``split``. :func:`prepare_text_data` then cleans, deduplicates, splits and
encodes the labels the same way for every source, as :mod:`recsys_cli.data.preprocess` does for
interaction logs: sources only read and rename.

Deduplication matters more for text than it looks: public sets repeat texts (Amazon's 2018 release copies
one review onto every product variant, templated queries collide), and a test text that was also seen in
training inflates every metric. So repeats are dropped, and a text that is in test (or valid) never stays
in train.

:func:`prepare_text` writes the result once to a processed folder, ``<data_dir>/processed/text/<name>-<key>/``
(``texts.parquet``, ``labels.json``, ``meta.json``), keyed by the source's fingerprint and the parameters,
and reuses it while they are unchanged; :func:`load_text_folder` reopens it without the raw files, which is
how a checkpoint that stored the folder's name and key is evaluated later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli.data.sources import (
    TABLE_FORMATS,
    SyntheticSource,
    _check_columns,
    _looks_like_hub_name,
    _require_path,
    hash_files,
    read_table,
)
from recsys_cli.errors import RecsysError, warn
from recsys_cli.io import atomic_folder

# Canonical column names of a text source's frame.
TEXT = "text"
LABEL = "label"
SPLIT = "split"
SPLITS = ("train", "valid", "test")
TASKS = ("classification", "regression")

# Split names as datasets spell them (Hugging Face uses "validation", CLINC150 "val", GLUE-likes "dev").
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "dev": "valid",
    "test": "test",
    "testing": "test",
}
# Regression targets are stratified by their rounded value (star ratings); a continuous target would give
# one tiny stratum per value, from which nothing can be carved, so it is binned by quantiles instead.
MAX_RATING_STRATA = 20
QUANTILE_STRATA = 10
CONFIG_KEY = "data.text.source"
NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "boolean"}  # pandas.api.types.infer_dtype
FORMAT_VERSION = 1  # bump when the cleaning or splitting rules change: processed folders and tokenisations are redone
# bump when the processed folder's files or their columns change, or what its key covers (2: unknown_labels;
# version 1 folders prepared with intents held out were reused by runs without them)
TEXT_SCHEMA_VERSION = 2
TEXTS_FILE, LABELS_FILE, META_FILE = "texts.parquet", "labels.json", "meta.json"


class TextSource:
    """Interface: ``load()`` reads texts and labels; ``fingerprint()`` identifies the input's content.

    ``label_names`` is the canonical label order when the source ships one (BANKING77's categories.json),
    ``oos_label`` the name of the out-of-scope class (CLINC150's "oos"); both are set once ``load()`` ran.
    """

    label_names: list[str] | None = None
    oos_label: str | None = None

    def load(self) -> pd.DataFrame:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


def _text_frame(text: Any, label: Any, split: Any = None) -> pd.DataFrame:
    """The canonical frame; ``split`` is one name for all rows, one per row, or None (no official splits)."""
    frame = pd.DataFrame({TEXT: np.asarray(text, dtype=object), LABEL: np.asarray(label)})
    if split is not None:
        frame[SPLIT] = split if isinstance(split, str) else np.asarray(split, dtype=object)
    return frame


def _check_text_values(values: pd.Series, column: str, where: str) -> None:
    """Numbers in the text column mean the column mapping is wrong, not that the texts are numbers."""
    if values.notna().any() and pd.api.types.infer_dtype(values, skipna=True) in NUMERIC_KINDS:
        raise RecsysError(
            f"column '{column}' of {where} holds numbers, not texts; "
            f"set {CONFIG_KEY}.text_column=<the column with the texts>."
        )


def _canonical_splits(values: pd.Series, where: str) -> pd.Series:
    names = values.astype("string").str.strip().str.lower()
    canonical = names.map(SPLIT_ALIASES)
    unknown = canonical.isna()
    if unknown.any():
        found = ", ".join(sorted(names[unknown].fillna("<missing>").unique())[:5])
        raise RecsysError(
            f"unknown split name(s) {found} in {where}; the split column ({CONFIG_KEY}.split_column) "
            "must say train, valid (or validation, val, dev) or test on every row."
        )
    return canonical.astype(object)


def _read_json(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecsysError(f"'{path}' is not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as exc:
        if path.stat().st_size == 0:
            raise RecsysError(f"'{path}' is empty; {fix}") from None
        raise RecsysError(f"'{path}' is not valid JSON ({exc.msg}, line {exc.lineno}); {fix}") from None


def _read_label_list(path: Path) -> list[str]:
    names = _read_json(path, "give a JSON list of label names.")
    if not isinstance(names, list) or not names:
        raise RecsysError(f"'{path}' is not a list of label names; give a JSON list such as [\"card_arrival\", ...].")
    names = [str(name) for name in names]
    if len(set(names)) != len(names):
        repeated = sorted(set(pd.Series(names)[pd.Series(names).duplicated()]))
        raise RecsysError(f"'{path}' lists label(s) {', '.join(repeated)} more than once; list each label once.")
    return names


def _table_files(folder: Path, suffixes: Any, what: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        wanted = "/".join(sorted({s.lstrip(".") for s in suffixes}))
        raise RecsysError(f"no {wanted} files in '{folder}'; pass data.path=<{what}>.")
    return files


# --- sources -----------------------------------------------------------------------------------------
class Banking77Source(TextSource):
    """BANKING77 (Casanueva et al. 2020, "Efficient Intent Detection with Dual Sentence Encoders").

    A folder with ``train.csv`` and ``test.csv`` (header ``text,category``) and ``categories.json`` (the
    77 intent names, whose order becomes the label order). Official test split, no validation split.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.label_names = None

    def _folder(self) -> Path:
        root = _require_path(self.path, "BANKING77")
        folder = root if root.is_dir() else root.parent
        if not (folder / "train.csv").exists():
            raise RecsysError(
                f"no train.csv in '{folder}'; pass data.path=<the BANKING77 folder> "
                "(train.csv, test.csv, categories.json)."
            )
        return folder

    def _files(self) -> list[Path]:
        folder = self._folder()
        return [folder / name for name in ("train.csv", "test.csv", "categories.json") if (folder / name).exists()]

    def load(self) -> pd.DataFrame:
        folder = self._folder()
        parts = []
        for split in ("train", "test"):
            path = folder / f"{split}.csv"
            if not path.exists():
                continue
            raw = read_table(path, "csv")
            missing = [column for column in (TEXT, "category") if column not in raw.columns]
            if missing:
                found = ", ".join(map(str, raw.columns[:20]))
                raise RecsysError(
                    f"'{path}' has no column {', '.join(missing)} (found: {found}); BANKING77 files have the "
                    "header text,category; for other layouts use data=text_table."
                )
            parts.append(_text_frame(raw[TEXT], raw["category"], split))
        categories = folder / "categories.json"
        self.label_names = _read_label_list(categories) if categories.exists() else None
        return pd.concat(parts, ignore_index=True)

    def fingerprint(self) -> str:
        return hash_files(self._files(), {"source": "banking77"})

    def describe(self) -> str:
        return f"BANKING77 at {self.path}"


# CLINC150 keys -> splits; the out-of-scope queries come in their own lists.
CLINC_KEYS = {
    "train": "train",
    "val": "valid",
    "test": "test",
    "oos_train": "train",
    "oos_val": "valid",
    "oos_test": "test",
}
CLINC_FIX = "pass data.path=<data_full.json of the CLINC150 release (or the folder holding it)>."


def _clinc_pairs(pairs: Any) -> pd.DataFrame | None:
    """A frame with columns 0 (text) and 1 (intent), or None when ``pairs`` is not a list of pairs."""
    if not isinstance(pairs, list):
        return None
    try:
        frame = pd.DataFrame(pairs, dtype=object)
    except (TypeError, ValueError):
        return None
    return frame if frame.empty or list(frame.columns) == [0, 1] else None


class ClincSource(TextSource):
    """CLINC150 / OOS-eval (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and
    Out-of-Scope Prediction"): a JSON object with lists of ``[text, intent]`` under ``train``/``val``/
    ``test`` and the out-of-scope queries under ``oos_train``/``oos_val``/``oos_test``.

    Out-of-scope queries get the label ``oos`` and are trained as one more class, the paper's "oos-train"
    setting; the evaluation reports in-scope accuracy and out-of-scope recall from ``oos_label``.
    """

    oos_label = "oos"

    def __init__(self, path: str | None) -> None:
        self.path = path

    def _file(self) -> Path:
        root = _require_path(self.path, "CLINC150")
        if root.is_file():
            return root
        if (root / "data_full.json").exists():
            return root / "data_full.json"
        candidates = sorted(root.glob("*.json"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise RecsysError(f"expected data_full.json (or one .json file) in '{root}', found {found}; {CLINC_FIX}")
        return candidates[0]

    def load(self) -> pd.DataFrame:
        path = self._file()
        data = _read_json(path, CLINC_FIX)
        if not isinstance(data, dict) or "train" not in data:
            found = ", ".join(map(str, list(data)[:10])) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
            raise RecsysError(
                f"'{path}' is not CLINC150 data: expected an object with keys train, val, test "
                f"(and oos_train, oos_val, oos_test), found {found or 'an empty object'}; {CLINC_FIX}"
            )
        parts = []
        for key, split in CLINC_KEYS.items():
            if key not in data:
                continue
            frame = _clinc_pairs(data[key])
            if frame is None:
                raise RecsysError(f"'{path}' key '{key}' is not a list of [text, intent] pairs; {CLINC_FIX}")
            if frame.empty:
                continue
            label = np.full(len(frame), self.oos_label, dtype=object) if key.startswith("oos_") else frame[1]
            parts.append(_text_frame(frame[0], label, split))
        if not parts:
            raise RecsysError(f"'{path}' holds no examples; {CLINC_FIX}")
        return pd.concat(parts, ignore_index=True)

    def fingerprint(self) -> str:
        return hash_files([self._file()], {"source": "clinc150"})

    def describe(self) -> str:
        return f"CLINC150 at {self.path}"


class ReviewSource(TextSource):
    """Product reviews with star ratings (Amazon Review Data 2018 JSON lines, Ni et al. 2019).

    ``path`` is a ``.json``/``.jsonl`` file or a folder of them. The text is the non-empty ``text_fields``
    joined with ". " (summary first: it is the reviewer's own one-line verdict; a summary already
    ending in ".", "!" or "?" is followed by a space only); the label is the rating.
    No official splits.
    """

    def __init__(self, path: str | None, text_fields: list[str] | None = None, rating_field: str = "overall") -> None:
        self.path = path
        self.text_fields = list(text_fields) if text_fields is not None else ["summary", "reviewText"]
        self.rating_field = rating_field

    def _files(self) -> list[Path]:
        root = _require_path(self.path, "reviews")
        return (
            [root] if root.is_file() else _table_files(root, {".json", ".jsonl"}, "a review file or a folder of them")
        )

    def load(self) -> pd.DataFrame:
        if not self.text_fields:
            raise RecsysError(f"{CONFIG_KEY}.text_fields is empty; list the review fields that make the text.")
        raw = pd.concat([read_table(path, "jsonl") for path in self._files()], ignore_index=True)
        _check_columns(raw, {"rating_field": self.rating_field}, f"'{self.path}'", CONFIG_KEY)
        for field in self.text_fields:  # one call per field: the role "text_fields" names each
            _check_columns(raw, {"text_fields": field}, f"'{self.path}'", CONFIG_KEY)
        text = _join_nonempty([_normalise_whitespace(raw[field]) for field in self.text_fields], ". ")
        return _text_frame(text, raw[self.rating_field])

    def fingerprint(self) -> str:
        return hash_files(self._files(), {"text_fields": self.text_fields, "rating_field": self.rating_field})

    def describe(self) -> str:
        return f"reviews at {self.path}"


def _join_nonempty(parts: list[pd.Series], glue: str) -> pd.Series:
    joined = parts[0]
    for part in parts[1:]:
        # "Great!" + "Works" reads "Great! Works", not "Great!. Works": a part that already ends a sentence
        # only needs the space.
        ended = joined.str.contains(r"[.!?]$", regex=True)
        between = np.where((joined != "") & (part != ""), np.where(ended, " ", glue), "")
        joined = joined + between + part
    return joined


class TableTextSource(TextSource):
    """Any CSV/TSV/JSONL/Parquet file (or folder of them) with a text and a label column, or a Hugging Face
    ``datasets`` name (a hub-looking ``path``, or ``format="hf"`` for a local dataset folder).

    Official splits come from ``split_column``, from file names in a folder (``train.csv``, ``test.csv``,
    ...), or from the splits of a ``datasets`` DatasetDict (``train``, ``validation``/``valid``/``val``,
    ``test``; others such as ``unsupervised`` are left out). ``hf_split`` reads one split only. Integer
    labels with ``datasets`` ClassLabel names become those names, in the dataset's order.
    """

    def __init__(
        self,
        path: str | None,
        text_column: str = TEXT,
        label_column: str = LABEL,
        split_column: str | None = None,
        format: str = "auto",
        sep: str | None = None,
        hf_split: str | None = None,
    ) -> None:
        self.path = path
        self.text_column = text_column
        self.label_column = label_column
        self.split_column = split_column
        self.format = format
        self.sep = sep
        self.hf_split = hf_split
        self.label_names = None

    def _is_hf(self) -> bool:
        if self.format == "hf":
            return True
        path = str(self.path or "")
        # "data/nope.csv" has one slash too: a table extension says it is a missing local file.
        return self.format == "auto" and _looks_like_hub_name(path) and Path(path).suffix.lower() not in TABLE_FORMATS

    def _files(self) -> list[Path]:
        path = _require_path(self.path, "a text table")
        return [path] if path.is_file() else _table_files(path, TABLE_FORMATS, "a table file or a folder of them")

    def _tables(self) -> list[tuple[str, str | None, pd.DataFrame]]:
        """(where, split from the file or dataset split name or None, table) for each part of the input."""
        if self._is_hf():
            return self._read_hf()
        files = self._files()
        file_splits = [SPLIT_ALIASES.get(path.stem.lower()) for path in files]
        if self.split_column is not None or len(files) == 1 or not all(file_splits):
            file_splits = [None] * len(files)
        return [
            (f"'{path}'", split, read_table(path, self.format, self.sep)) for path, split in zip(files, file_splits)
        ]

    def _read_hf(self) -> list[tuple[str, str | None, pd.DataFrame]]:
        import datasets

        where = f"Hugging Face dataset '{self.path}'"
        try:
            loaded = datasets.load_dataset(str(self.path), split=self.hf_split)
        except Exception as exc:  # missing names, network, hub and builder errors all mean the same to the user
            raise RecsysError(
                f"cannot load {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                "check the name and your connection, or pass a local file as data.path."
            ) from None
        if isinstance(loaded, datasets.Dataset):
            return [(where, None, self._hf_frame(loaded))]
        splits = {name: SPLIT_ALIASES.get(name.lower()) for name in loaded}
        if not any(splits.values()):
            raise RecsysError(
                f"{where} has splits {', '.join(loaded)}, none of them train/validation/test; "
                f"set {CONFIG_KEY}.hf_split=<one of them>."
            )
        return [(f"{where} ({name})", split, self._hf_frame(loaded[name])) for name, split in splits.items() if split]

    def _hf_frame(self, dataset: Any) -> pd.DataFrame:
        import datasets

        frame = dataset.to_pandas()
        feature = dataset.features.get(self.label_column)
        if isinstance(feature, datasets.ClassLabel) and self.label_column in frame.columns:
            self.label_names = list(feature.names)
            codes = frame[self.label_column].to_numpy()
            # -1 marks a hidden label (GLUE-style test splits): it becomes missing and is dropped.
            names = np.asarray([*feature.names, None], dtype=object)
            frame[self.label_column] = names[np.where((codes >= 0) & (codes < len(feature.names)), codes, -1)]
        return frame

    def load(self) -> pd.DataFrame:
        parts = []
        for where, split, raw in self._tables():
            wanted = {"text_column": self.text_column, "label_column": self.label_column}
            _check_columns(raw, {**wanted, "split_column": self.split_column}, where, CONFIG_KEY, CONFIG_KEY)
            _check_text_values(raw[self.text_column], self.text_column, where)
            if self.split_column is not None:
                split = _canonical_splits(raw[self.split_column], where)
            parts.append(_text_frame(raw[self.text_column], raw[self.label_column], split))
        return pd.concat(parts, ignore_index=True)

    def fingerprint(self) -> str:
        params = {
            "text_column": self.text_column,
            "label_column": self.label_column,
            "split_column": self.split_column,
            "format": self.format,
            "sep": self.sep,
            "hf_split": self.hf_split,
        }
        if self._is_hf():
            local = Path(str(self.path)).expanduser()
            files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
            return hash_files(files, {**params, "hf": str(self.path)})
        return hash_files(self._files(), params)

    def describe(self) -> str:
        return f"text table {self.path}"


class SyntheticQueries(TextSource):
    """The synthetic shop's session-opening queries labelled with their intents (no download).

    ``params`` are those of :class:`~recsys_cli.data.sources.SyntheticSource`, so the queries belong to
    the same shop the recommenders train on.
    """

    def __init__(self, **params: Any) -> None:
        self.params = params

    def load(self) -> pd.DataFrame:
        from recsys_cli.data.synthetic import INTENT, QUERY

        queries = SyntheticSource(**self.params).load().extra["queries"]
        return _text_frame(queries[QUERY], queries[INTENT])

    def fingerprint(self) -> str:
        return hash_files([], {"synthetic_queries": self.params})

    def describe(self) -> str:
        return f"synthetic shop queries ({self.params.get('n_users', '?')} users)"


# --- cleaning, deduplication, splitting ----------------------------------------------------------------
@dataclass
class TextSplits:
    """Cleaned, deduplicated and split texts with encoded labels, as the text datamodule consumes them.

    train/valid/test: columns ``text`` (str) and ``label`` (int class index for classification, float
        target for regression).
    label_names: class index -> name (classification); None for regression.
    oos_label: index of the out-of-scope class, if the source has one.
    counts: rows read and rows dropped by each cleaning rule, in the order applied.
    fingerprint: of the source's content and every parameter that changes the splits.
    path: the processed folder these splits were read from (:func:`prepare_text`), else None.
    key: that folder's key (the source's fingerprint and the parameters, see :func:`text_folder`), else None.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    task: str
    label_names: list[str] | None
    oos_label: int | None
    counts: dict[str, int]
    fingerprint: str
    path: Path | None = None
    key: str | None = None


def _normalise_whitespace(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("").str.replace(r"\s+", " ", regex=True).str.strip()


def _clean_labels(values: pd.Series, task: str, where: str) -> tuple[pd.Series, pd.Series]:
    """Labels as float targets (regression) or strings (classification), and which rows have one."""
    present = values.notna() & (values.astype("string").str.strip() != "").fillna(False)
    if task == "regression":
        targets = pd.to_numeric(values.where(present), errors="coerce").astype("float64")
        bad = present & targets.isna()
        if bad.any():
            examples = ", ".join(f"'{value}'" for value in values[bad].astype(str).unique()[:3])
            raise RecsysError(
                f"regression needs numeric labels but {where} has labels such as {examples}; "
                f"set {CONFIG_KEY}.label_column (or rating_field) to a numeric column, or train a classifier."
            )
        return targets, present & np.isfinite(targets)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.where(present)
        if (numbers.dropna() % 1 == 0).all():
            numbers = numbers.astype("Int64")  # star ratings 5.0 read as floats name the class "5"
        return numbers.astype("string").str.strip(), present
    return values.astype("string").str.strip(), present


def _sorted_labels(names: Any) -> list[str]:
    """Numerically when every label is a number ("2" before "10"), else alphabetically."""
    names = [str(name) for name in names]
    numeric = pd.to_numeric(pd.Series(names, dtype=object), errors="coerce")
    if len(names) and numeric.notna().all():
        return [names[i] for i in np.argsort(numeric.to_numpy(), kind="stable")]
    return sorted(names)


def _drop_duplicates(rows: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Keep each text's first occurrence per split; a text in test (or valid) leaves the earlier splits."""
    key = rows[TEXT].str.casefold()
    repeated = pd.DataFrame({SPLIT: rows[SPLIT], TEXT: key}).duplicated().to_numpy()
    rows, key = rows[~repeated], key[~repeated]
    # Visit test first, then valid, then train: a text's first visit keeps it, later ones are leaks.
    priority = rows[SPLIT].map({"test": 0, "valid": 1, "train": 2}).to_numpy()
    order = np.argsort(priority, kind="stable")
    leaked = np.empty(len(rows), dtype=bool)
    leaked[order] = key.iloc[order].duplicated().to_numpy()
    split = rows[SPLIT].to_numpy()
    counts["duplicate texts dropped"] = int(repeated.sum())
    counts["test/valid texts removed from train"] = int((leaked & (split == "train")).sum())
    counts["test texts removed from valid"] = int((leaked & (split == "valid")).sum())
    return rows[~leaked].reset_index(drop=True)


def _strata(labels: np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        return labels
    rounded = np.rint(labels.astype(np.float64))
    if len(np.unique(rounded)) <= MAX_RATING_STRATA:
        return rounded
    edges = np.quantile(labels, np.linspace(0.0, 1.0, QUANTILE_STRATA + 1)[1:-1])
    return np.searchsorted(edges, labels, side="right")


def _carve(strata: np.ndarray, ratios: list[tuple[str, float]], seed: int) -> np.ndarray:
    """Split name per row: each stratum gives round(ratio * size) of its rows, in a seeded random order,
    to each carved split (at least one from a stratum of 3+ rows); at least one row stays in train."""
    rng = np.random.default_rng(seed)
    _, codes, sizes = np.unique(strata, return_inverse=True, return_counts=True)
    order = np.lexsort((rng.random(len(codes)), codes))  # grouped by stratum, random within
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts[codes[order]]
    assigned = np.full(len(codes), "train", dtype=object)
    taken = np.zeros(len(sizes), dtype=np.int64)
    for name, ratio in ratios:
        if ratio <= 0:
            continue
        want = np.rint(ratio * sizes).astype(np.int64)
        want = np.where(sizes >= 3, np.maximum(want, 1), want)
        want = np.minimum(want, np.maximum(sizes - 1 - taken, 0))
        assigned[(rank >= taken[codes]) & (rank < (taken + want)[codes])] = name
        taken += want
    return assigned


def _label_map(train_labels: pd.Series, given: list[str] | None, shipped: list[str] | None, where: str) -> list[str]:
    found = train_labels.unique()
    if len(found) < 2:
        only = f" ('{found[0]}')" if len(found) else ""
        raise RecsysError(
            f"the training split of {where} has one class{only}; a classifier needs at least two: "
            f"check {CONFIG_KEY}.label_column, or use a regression model for a numeric target."
        )
    base = [str(name) for name in (given if given is not None else shipped or [])]
    if len(set(base)) != len(base):
        raise RecsysError(f"the label names for {where} repeat a label; give each label once.")
    known = set(base)
    return base + _sorted_labels(label for label in found if label not in known)


def _split_frames(rows: pd.DataFrame, task: str) -> dict[str, pd.DataFrame]:
    """Train, valid and test of ``rows`` (text, label, split) as :class:`TextSplits` holds them, built one
    way whether fresh or read from a processed folder, so both give equal frames."""
    dtype = np.int64 if task == "classification" else np.float64
    text, label, split = rows[TEXT].to_numpy(dtype=object), rows[LABEL].to_numpy(dtype=dtype), rows[SPLIT].to_numpy()
    return {name: pd.DataFrame({TEXT: text[split == name], LABEL: label[split == name]}) for name in SPLITS}


def _check_options(task: str, valid_ratio: float, test_ratio: float) -> None:
    if task not in TASKS:
        raise RecsysError(f"unknown task '{task}'; use one of: {', '.join(TASKS)}.")
    _check_ratios(valid_ratio, test_ratio)


def _check_ratios(valid_ratio: float, test_ratio: float) -> None:
    for key, ratio in (("valid_ratio", valid_ratio), ("test_ratio", test_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise RecsysError(f"data.text.{key}={ratio} is outside [0, 1); use a share such as 0.1.")
    if valid_ratio + test_ratio >= 1.0:
        raise RecsysError(
            f"data.text.valid_ratio + data.text.test_ratio = {valid_ratio + test_ratio:g} leaves nothing to "
            "train on; keep their sum below 1 (e.g. 0.1 each)."
        )


def prepare_text_data(
    source: TextSource,
    task: str = "classification",
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    seed: int = 0,
    dedupe: bool = True,
    label_names: list[str] | None = None,
    source_fingerprint: str | None = None,
    unknown_labels: float = 0.0,
) -> TextSplits:
    """Clean, deduplicate, split and label-encode a text source.

    Args:
        source: the text source.
        task: "classification" (labels become class indices) or "regression" (labels are float targets).
        valid_ratio: share of each class (rounded rating for regression) carved out of train for
            validation when the source has no validation split.
        test_ratio: the same for a test split, when the source has none.
        seed: seed of those carve-outs; equal seeds give equal splits.
        dedupe: drop repeated texts (case- and whitespace-insensitive), keeping the first in each split,
            and drop from train (and valid) every text that is also in a later split, so no test text is
            trained on. Without official splits this happens before splitting.
        label_names: an existing model's labels (classification): their order is kept and labels new in
            train are appended, so the model's class indices stay valid.
        source_fingerprint: ``source.fingerprint()`` when the caller already has it (it hashes every file).
        unknown_labels: a share of the classes (drawn with ``seed``) held out as unknown intents, the
            BANKING77-OOS protocol (Zhang et al. 2022, "Are Pretrained Transformers Robust in Intent
            Classification?"): their training rows are dropped, their validation and test rows relabelled
            out-of-scope (the source's out-of-scope label, else ``oos``), which the model never trains on.

    Returns:
        :class:`TextSplits`.
    """
    _check_options(task, valid_ratio, test_ratio)
    frame = source.load()
    where = source.describe()
    counts = {"rows read": len(frame)}
    if frame.empty:
        raise RecsysError(f"{where} has no rows; give a file with texts and labels.")
    _check_text_values(frame[TEXT], TEXT, where)

    text = _normalise_whitespace(frame[TEXT])
    has_text = (text != "").to_numpy(dtype=bool)
    labels, has_label = _clean_labels(frame[LABEL], task, where)
    has_label = has_label.to_numpy(dtype=bool)
    counts["empty texts dropped"] = int((~has_text).sum())
    counts["missing labels dropped"] = int((has_text & ~has_label).sum())
    split = _canonical_splits(frame[SPLIT], where) if SPLIT in frame.columns else "train"
    rows = pd.DataFrame({TEXT: text, LABEL: labels, SPLIT: split})[has_text & has_label].reset_index(drop=True)
    if rows.empty:
        raise RecsysError(
            f"{where} has no row with both a text and a label; check {CONFIG_KEY}.text_column and label_column."
        )
    if dedupe:
        rows = _drop_duplicates(rows, counts)

    present = set(rows[SPLIT].unique())
    if "train" not in present:
        raise RecsysError(f"{where} has no training rows (splits: {', '.join(sorted(present))}); give a train split.")
    carve = [(name, ratio) for name, ratio in (("test", test_ratio), ("valid", valid_ratio)) if name not in present]
    if carve:
        pool = np.flatnonzero(rows[SPLIT].to_numpy() == "train")
        strata = _strata(rows[LABEL].to_numpy()[pool], task)
        rows.loc[pool, SPLIT] = _carve(strata, carve, seed)

    names: list[str] | None = None
    oos: int | None = None
    oos_name = source.oos_label or "oos"
    if task == "classification" and unknown_labels > 0:
        rows = _hold_out_labels(rows, unknown_labels, seed, oos_name, counts, where)
    if task == "classification":
        is_train = rows[SPLIT] == "train"
        names = _label_map(rows.loc[is_train, LABEL], label_names, source.label_names, where)
        if unknown_labels > 0 and oos_name not in names:
            names = [*names, oos_name]  # a class no training row has: what the held-out intents are
        codes = pd.Index(names).get_indexer(rows[LABEL].astype(object))
        unknown = codes < 0  # only in valid/test: every training label is in the map
        if unknown.any():
            first = rows.loc[unknown, SPLIT].iloc[0]
            in_first = unknown & (rows[SPLIT] == first).to_numpy()
            missing = ", ".join(f"'{label}'" for label in rows.loc[in_first, LABEL].unique()[:5])
            raise RecsysError(
                f"label(s) {missing} in the {first} split of {where} never occur in train; add training "
                "examples for them or remove them from that split."
            )
        rows[LABEL] = codes
        oos = names.index(oos_name) if oos_name in names else None

    parameters = {
        "source": [type(source).__name__, source_fingerprint or source.fingerprint()],
        "task": task,
        "valid_ratio": valid_ratio,
        "test_ratio": test_ratio,
        "seed": seed,
        "dedupe": dedupe,
        "unknown_labels": unknown_labels,
        "label_names": names,  # the resulting map: passing a model's own labels back gives the same data
        "version": FORMAT_VERSION,
    }
    return TextSplits(
        **_split_frames(rows, task),
        task=task,
        label_names=names,
        oos_label=oos,
        counts=counts,
        fingerprint=hash_files([], parameters),
    )


# --- processed folder ----------------------------------------------------------------------------------
def text_folder(data_dir: str | os.PathLike, name: str, key: str) -> Path:
    """The processed folder of dataset ``name`` whose key is ``key`` (what a checkpoint stores to reopen it)."""
    return Path(data_dir) / "processed" / "text" / f"{name}-{key[:12]}"


def open_text_folder(folder: Path, key: str) -> TextSplits | None:
    """The splits in ``folder`` if it holds the texts of that key, else None (absent, other, unreadable, or
    damaged: a truncated or edited file is reported and the folder is built again from the raw data)."""
    if _stored_key(folder) != key:
        return None
    try:
        return load_text_folder(folder)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, bad JSON, a missing column: rebuild
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        warn(f"the processed text data in {folder} is damaged ({reason}); building it again from the raw data.")
        return None


def _stored_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):  # absent, unreadable or not an object: rebuild it
        return None


def load_text_folder(path: str | os.PathLike) -> TextSplits:
    """The splits of a processed text folder, equal to what :func:`prepare_text_data` returned when it was
    written (columns, dtypes, row order, counts, fingerprint and label map); no raw file is read."""
    folder = Path(path)
    if not (folder / META_FILE).is_file():
        raise RecsysError(
            f"no processed text data at '{folder}'; it is written when a model trains on the raw data, so "
            "rebuild it by training again with data.path=<the raw data>."
        )
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
    rows = pd.read_parquet(folder / TEXTS_FILE)
    task = meta["task"]
    return TextSplits(
        **_split_frames(rows, task),
        task=task,
        label_names=labels["label_names"],
        oos_label=labels["oos_label"],
        counts=meta["counts"],
        fingerprint=meta["fingerprint"],
        path=folder,
        key=meta["key"],
    )


# The splitting settings of prepare_text_data and their defaults.
SPLIT_SETTINGS = {
    "task": "classification",
    "valid_ratio": 0.1,
    "test_ratio": 0.1,
    "seed": 0,
    "dedupe": True,
    "unknown_labels": 0.0,
}


def _hold_out_labels(
    rows: pd.DataFrame, share: float, seed: int, oos_name: str, counts: dict[str, int], where: str
) -> pd.DataFrame:
    """Hold out ``share`` of the classes as unknown: drop their training rows, relabel the rest ``oos_name``."""
    if not 0 < share < 1:
        raise RecsysError(f"data.text.unknown_labels={share} must be a share of the classes in (0, 1), e.g. 0.25.")
    classes = sorted(str(label) for label in rows[LABEL].unique() if str(label) != oos_name)
    count = round(share * len(classes))
    if not 1 <= count < len(classes):
        raise RecsysError(
            f"data.text.unknown_labels={share} holds out {count} of the {len(classes)} classes of {where}; "
            "choose a share that leaves at least one class on each side."
        )
    held = set(np.random.default_rng(seed).choice(classes, size=count, replace=False).tolist())
    unknown = rows[LABEL].astype(str).isin(held).to_numpy()
    in_train = unknown & (rows[SPLIT] == "train").to_numpy()
    counts["classes held out as unknown"] = count
    counts["training rows of unknown classes dropped"] = int(in_train.sum())
    rows = rows.copy()
    rows.loc[unknown, LABEL] = oos_name
    return rows[~in_train].reset_index(drop=True)


def prepare_text(
    name: str,
    source: TextSource,
    data_dir: str | os.PathLike,
    *,
    label_names: list[str] | None = None,
    force: bool = False,
    **settings: Any,
) -> tuple[TextSplits, bool]:
    """Load the processed text folder for this source and these parameters, building it first if needed.

    The folder's key is computed without loading the data: from ``source.fingerprint()`` (a hash of the
    files or the generator's parameters) and the arguments of :func:`prepare_text_data`, which builds the
    folder's content. ``settings``: its ``task``, ``valid_ratio``, ``test_ratio``, ``seed``, ``dedupe`` and
    ``unknown_labels`` (defaults in ``SPLIT_SETTINGS``). ``force`` rebuilds an existing folder.

    Returns:
        The splits (with ``path`` and ``key`` set) and whether an existing folder was reused.
    """
    unknown = sorted(set(settings) - set(SPLIT_SETTINGS))
    if unknown:
        raise TypeError(f"prepare_text() got unknown settings: {', '.join(unknown)}")
    options = {**SPLIT_SETTINGS, **settings}
    _check_options(options["task"], options["valid_ratio"], options["test_ratio"])
    source_fp = source.fingerprint()  # hashes every input file: once
    parameters = {
        "source": [type(source).__name__, source_fp],
        "task": options["task"],
        "valid_ratio": float(options["valid_ratio"]),
        "test_ratio": float(options["test_ratio"]),
        "seed": int(options["seed"]),
        "dedupe": bool(options["dedupe"]),
        "label_names": None if label_names is None else [str(label) for label in label_names],
        "unknown_labels": float(options["unknown_labels"]),
        "format_version": FORMAT_VERSION,
    }
    key = hash_files([], {**parameters, "schema": TEXT_SCHEMA_VERSION})
    folder = text_folder(data_dir, name, key)
    if not force and (splits := open_text_folder(folder, key)) is not None:
        return splits, True

    splits = prepare_text_data(source, label_names=label_names, source_fingerprint=source_fp, **options)
    parts = {split: getattr(splits, split) for split in SPLITS}
    rows = pd.concat([frame.assign(**{SPLIT: split}) for split, frame in parts.items()], ignore_index=True)
    labels = {"label_names": splits.label_names, "oos_label": splits.oos_label}
    meta = {
        "name": name,
        "source": source.describe(),
        "key": key,
        "fingerprint": splits.fingerprint,
        "task": splits.task,
        **labels,
        "counts": splits.counts,
        "splits": {split: len(frame) for split, frame in parts.items()},
        "parameters": parameters,
        "schema": TEXT_SCHEMA_VERSION,
    }
    with atomic_folder(folder) as tmp:
        rows.to_parquet(tmp / TEXTS_FILE, index=False)
        (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return dataclasses.replace(splits, path=folder, key=key), False
