"""Data sources: each reads one format into :class:`SourceData` with canonical column names.

A source is chosen by ``data=<name>`` (its YAML's ``source._target_``) and located by ``data.path``
(a file or a folder). Sources only read and rename; cleaning, filtering and splitting happen once, in
:mod:`recsys_cli.data.preprocess`, for every format alike.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli.data.base import ITEM, RATING, TEXT, TIME, TITLE, USER, SourceData
from recsys_cli.data.queries import QUERY, REVIEW
from recsys_cli.errors import RecsysError, warn

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


class Source:
    """Interface: ``load()`` reads the tables; ``fingerprint()`` identifies the input's content."""

    def load(self) -> SourceData:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


def _require_path(path: str | None, what: str) -> Path:
    if path is None or str(path) == "":
        raise RecsysError(f"no data path given for {what}; pass data.path=<file or folder>.")
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        raise RecsysError(f"data path '{resolved}' does not exist; pass data.path=<file or folder> for {what}.")
    return resolved


def hash_files(paths: list[Path], extra: Any = None) -> str:
    """Content hash of input files (streamed blake2b) plus any parameters that change the reading."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _check_columns(
    frame: pd.DataFrame, wanted: dict[str, str | None], where: str, config_key: str, source_key: str | None = None
) -> None:
    """Each wanted column is in ``frame``. ``source_key`` (``data.source``): where the format and delimiter are
    set, named when the header shows the file was split at the wrong delimiter."""
    for role, column in wanted.items():
        if column is not None and column not in frame.columns:
            delimiter = header_delimiter(frame) if source_key else None
            if delimiter is not None:
                fix = f"{source_key}.format=tsv" if delimiter == "\t" else f"{source_key}.sep='{delimiter}'"
                shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
                raise RecsysError(
                    f"{where} has one column '{frame.columns[0]}': its fields look {shown}-separated; set {fix}."
                )
            available = ", ".join(map(str, frame.columns[:20]))
            raise RecsysError(
                f"column '{column}' ({role}) not found in {where}; available: {available}; "
                f"set {config_key}.{role}=<column>."
            )


LIST_CELLS = (list, tuple, np.ndarray)


def joined_text(frame: pd.DataFrame, columns: str | list[str], role: str, where: str, config_key: str) -> pd.Series:
    """One text per row from one column or several (joined with ". "); list cells (Amazon metadata's
    ``category``, ``description``, ``feature``) are joined with spaces, missing values are empty."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    text: pd.Series | None = None
    for column in columns:
        _check_columns(frame, {role: column}, where, config_key)
        values = frame[column]
        # A column of lists (JSON arrays) is known by its first value: no Python pass over a column of strings.
        first = values.first_valid_index() if values.dtype == object else None
        if first is not None and isinstance(values[first], LIST_CELLS):
            values = values.map(lambda cell: " ".join(map(str, cell)) if isinstance(cell, LIST_CELLS) else cell)
        part = values.fillna("").astype(str).str.strip()
        text = part if text is None else text + np.where((text != "") & (part != ""), ". ", "") + part
    return text if text is not None else pd.Series([""] * len(frame), index=frame.index)


class SyntheticSource(Source):
    """The embedded default: a generated shop with intents, sessions and queries (no download)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def load(self) -> SourceData:
        from recsys_cli.data.synthetic import generate_shop

        params = dict(self.params)
        for key in ("sessions_per_user", "session_length"):
            if key in params:
                params[key] = tuple(params[key])
        return generate_shop(**params)

    def fingerprint(self) -> str:
        return hash_files([], {"synthetic": self.params, "version": 1})

    def describe(self) -> str:
        return f"synthetic shop ({self.params.get('n_users', '?')} users)"


def read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file (tab-separated, header ``name:type``) keeping the bare names."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""], quoting=3)
    except pd.errors.EmptyDataError:
        raise RecsysError(f"'{path}' is empty; give a RecBole atomic file with a header line.") from None
    names = [str(column).split(":")[0] for column in frame.columns]
    types = {str(column).split(":")[0]: ([*str(column).split(":"), ""])[1] for column in frame.columns}
    frame.columns = names
    for name, kind in types.items():
        if kind == "float":
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


class RecBoleSource(Source):
    """Any RecBole atomic dataset: ``<name>.inter`` with optional ``<name>.item`` / ``<name>.user``."""

    def __init__(
        self,
        path: str | None,
        dataset: str | None = None,
        fields: dict[str, str | None] | None = None,
        title_field: str | None = None,
    ) -> None:
        self.path = path
        self.dataset = dataset
        self.fields = dict(fields or {"user": "user_id", "item": "item_id", "time": "timestamp", "rating": "rating"})
        self.title_field = title_field

    def _files(self) -> dict[str, Path]:
        root = _require_path(self.path, "a RecBole dataset")
        if root.is_file():
            inter, folder, stem = root, root.parent, root.stem
        else:
            candidates = sorted(root.glob(f"{self.dataset}.inter" if self.dataset else "*.inter"))
            if len(candidates) != 1:
                found = ", ".join(p.name for p in candidates) or "none"
                raise RecsysError(
                    f"expected one .inter file in '{root}', found {found}; set data.source.dataset=<name>."
                )
            inter, folder, stem = candidates[0], root, candidates[0].stem
        files = {"inter": inter}
        for kind in ("item", "user"):
            side = folder / f"{stem}.{kind}"
            if side.exists():
                files[kind] = side
        return files

    def load(self) -> SourceData:
        files = self._files()
        raw = read_atomic(files["inter"])
        wanted = {role: self.fields.get(role) for role in ("user", "item", "time", "rating")}
        if wanted["rating"] not in raw.columns:
            wanted["rating"] = None
        _check_columns(raw, wanted, str(files["inter"]), "data.source.fields")
        rename = {wanted["user"]: USER, wanted["item"]: ITEM, wanted["time"]: TIME}
        if wanted["rating"]:
            rename[wanted["rating"]] = RATING
        interactions = raw.rename(columns=rename)
        items = None
        if "item" in files:
            items = self._items(read_atomic(files["item"]), wanted["item"])
        users = read_atomic(files["user"]).rename(columns={wanted["user"]: USER}) if "user" in files else None
        return SourceData(interactions=interactions, items=items, users=users)

    def _items(self, frame: pd.DataFrame, item_field: str) -> pd.DataFrame:
        _check_columns(frame, {"item": item_field}, "the .item file", "data.source.fields")
        frame = frame.rename(columns={item_field: ITEM})
        title = self.title_field or next((c for c in frame.columns if "title" in c.lower() or c == "name"), None)
        out = pd.DataFrame({ITEM: frame[ITEM]})
        out[TITLE] = frame[title].fillna("") if title else ""
        others = [c for c in frame.columns if c not in (ITEM, title)]
        # Everything else about the item (year, genres, brand...) becomes its text for text-aware models.
        out[TEXT] = frame[others].fillna("").astype(str).agg(" ".join, axis=1) if others else ""
        return out

    def fingerprint(self) -> str:
        return hash_files(list(self._files().values()), {"fields": self.fields, "title": self.title_field})

    def describe(self) -> str:
        return f"RecBole atomic files at {self.path}"


class MovieLensSource(Source):
    """Raw GroupLens MovieLens: ml-100k (u.data/u.item), ml-1m (ratings.dat/movies.dat), ml-latest (CSV)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def _variant(self) -> tuple[str, Path]:
        root = _require_path(self.path, "MovieLens")
        folder = root if root.is_dir() else root.parent
        for variant, marker in (("ml-100k", "u.data"), ("ml-1m", "ratings.dat"), ("ml-latest", "ratings.csv")):
            if (folder / marker).exists():
                return variant, folder
        raise RecsysError(
            f"no MovieLens files in '{folder}' (looked for u.data, ratings.dat, ratings.csv); "
            "point data.path at the unzipped MovieLens folder."
        )

    def load(self) -> SourceData:
        variant, folder = self._variant()
        names = [USER, ITEM, RATING, TIME]
        if variant == "ml-100k":
            inter = pd.read_csv(folder / "u.data", sep="\t", names=names, dtype=str)
            items = self._ml100k_items(folder)
        elif variant == "ml-1m":
            inter = pd.read_csv(folder / "ratings.dat", sep="::", names=names, dtype=str, engine="python")
            movies = folder / "movies.dat"
            items = None
            if movies.exists():
                raw = pd.read_csv(
                    movies, sep="::", names=[ITEM, TITLE, "genres"], dtype=str, engine="python", encoding="latin-1"
                )
                items = pd.DataFrame({ITEM: raw[ITEM], TITLE: raw[TITLE], TEXT: raw["genres"].str.replace("|", " ")})
        else:
            inter = pd.read_csv(folder / "ratings.csv", dtype=str).rename(
                columns={"userId": USER, "movieId": ITEM, "rating": RATING, "timestamp": TIME}
            )
            movies = folder / "movies.csv"
            items = None
            if movies.exists():
                raw = pd.read_csv(movies, dtype=str)
                items = pd.DataFrame(
                    {ITEM: raw["movieId"], TITLE: raw["title"], TEXT: raw["genres"].str.replace("|", " ")}
                )
        inter[RATING] = pd.to_numeric(inter[RATING], errors="coerce")
        return SourceData(interactions=inter, items=items)

    @staticmethod
    def _ml100k_items(folder: Path) -> pd.DataFrame | None:
        path = folder / "u.item"
        if not path.exists():
            return None
        raw = pd.read_csv(path, sep="|", header=None, dtype=str, encoding="latin-1")
        genre_names = [
            "unknown",
            "Action",
            "Adventure",
            "Animation",
            "Children's",
            "Comedy",
            "Crime",
            "Documentary",
            "Drama",
            "Fantasy",
            "Film-Noir",
            "Horror",
            "Musical",
            "Mystery",
            "Romance",
            "Sci-Fi",
            "Thriller",
            "War",
            "Western",
        ]
        flags = raw.iloc[:, 5 : 5 + len(genre_names)].astype(int).to_numpy().astype(bool)
        genres = [" ".join(g for g, on in zip(genre_names, row) if on) for row in flags]
        return pd.DataFrame({ITEM: raw[0], TITLE: raw[1], TEXT: genres})

    def fingerprint(self) -> str:
        _, folder = self._variant()
        files = [
            p
            for p in folder.iterdir()
            if p.name in {"u.data", "u.item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv"}
        ]
        return hash_files(files)

    def describe(self) -> str:
        return f"MovieLens ({self._variant()[0]}) at {self.path}"


def read_table(path: Path, fmt: str = "auto", sep: str | None = None, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read CSV/TSV/JSONL/Parquet (format from the extension unless given) into a DataFrame.

    ``text_columns``: CSV/TSV columns read as written, not as the numbers a type guess would make of them
    (ids: "007" is not 7, "7.0" is not "7"). A file that is not UTF-8 is read as Latin-1, with a warning.
    """
    if fmt == "auto":
        fmt = TABLE_FORMATS.get(path.suffix.lower(), "")
        if not fmt:
            raise RecsysError(
                f"cannot tell the format of '{path}' from its extension; set data.source.format=csv|tsv|jsonl|parquet."
            )
    if fmt not in ("csv", "tsv", "jsonl", "parquet"):
        raise RecsysError(f"unknown table format '{fmt}'; use csv, tsv, jsonl, parquet or hf.")
    if path.stat().st_size == 0:
        raise RecsysError(f"'{path}' is empty; give a file with a header and rows.")
    try:
        if fmt in ("csv", "tsv"):
            return _read_csv(path, sep or ("\t" if fmt == "tsv" else ","), text_columns)
        if fmt == "jsonl":
            return _read_jsonl(path)
        return pd.read_parquet(path)
    except RecsysError:
        raise
    except Exception as exc:  # pandas, pyarrow and the JSON parser raise their own error types for malformed files
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecsysError(f"cannot read '{path}' as {fmt}: {reason}; check the file and format.") from None


def _not_utf8(path: Path) -> None:
    warn(f"'{path}' is not UTF-8; it is read as Latin-1 (re-encode it to UTF-8 if its text looks wrong).")


def _read_csv(path: Path, delimiter: str, text_columns: Sequence[str]) -> pd.DataFrame:
    options: dict[str, Any] = {"sep": delimiter, "engine": "pyarrow"}
    frame = None
    try:
        frame = pd.read_csv(path, **options)
    except UnicodeDecodeError:  # a header that is not UTF-8
        pass
    except pd.errors.ParserError as exc:
        if "straddl" not in str(exc):
            raise
        # A line longer than pyarrow's read block (a long text, a huge history): the C parser has no such limit.
        options = {"sep": delimiter, "low_memory": False}
        frame = pd.read_csv(path, **options)
    if frame is None or _has_undecoded_text(frame):
        # Not UTF-8 (pyarrow keeps such a column as bytes): Latin-1 decodes any byte, so ids stay distinct.
        _not_utf8(path)
        options = {"sep": delimiter, "encoding": "latin-1", "low_memory": False}
        frame = pd.read_csv(path, **options)
    guessed = [c for c in dict.fromkeys(text_columns) if c in frame.columns and not _is_text(frame[c])]
    if guessed:  # read again as text (pandas' pyarrow reader mistypes other columns when given dtypes)
        frame[guessed] = pd.read_csv(path, usecols=guessed, dtype=str, **options)[guessed]
    return frame


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object or pd.api.types.is_string_dtype(values)


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True, dtype=False)
    except UnicodeDecodeError:
        _not_utf8(path)
        return pd.read_json(path, lines=True, dtype=False, encoding="latin-1")


def _has_undecoded_text(frame: pd.DataFrame) -> bool:
    """Whether a column came back as bytes (pyarrow reads a CSV column that is not valid UTF-8 as binary)."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object:
            first = values.first_valid_index()
            if first is not None and isinstance(values[first], bytes):
                return True
    return False


def header_delimiter(frame: pd.DataFrame) -> str | None:
    """The delimiter a one-column table's header holds (``;`` in "user_id;item_id"): the file was read with
    the wrong one. None when the header looks right."""
    if len(frame.columns) != 1:
        return None
    header = str(frame.columns[0])
    return next((sep for sep in ("\t", ";", "|", ",") if sep in header), None)


def _looks_like_hub_name(path: str) -> bool:
    return not Path(path).exists() and path.count("/") == 1 and not path.startswith((".", "/", "~"))


class TableSource(Source):
    """Generic CSV/TSV/JSONL/Parquet (or a Hugging Face ``datasets`` name) with a column mapping."""

    def __init__(
        self,
        path: str | None,
        columns: dict[str, str | None],
        format: str = "auto",
        sep: str | None = None,
        items_path: str | None = None,
        item_columns: dict[str, str | None] | None = None,
        hf_split: str = "train",
    ) -> None:
        self.path = path
        self.columns = dict(columns)
        self.format = format
        self.sep = sep
        self.items_path = items_path
        self.item_columns = dict(item_columns or {})
        self.hf_split = hf_split

    def _is_hf(self) -> bool:
        return self.format == "hf" or (
            self.format == "auto" and self.path is not None and _looks_like_hub_name(str(self.path))
        )

    def _read(self) -> pd.DataFrame:
        if self._is_hf():
            return self._read_hf()
        path = _require_path(self.path, "a table source")
        # Ids as written: a guessed number type would make "7" and "7.0" one id, and "007" 7.
        ids = [column for column in (self.columns.get("user"), self.columns.get("item")) if column]
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_FORMATS)
            if not files:
                raise RecsysError(f"no CSV/TSV/JSONL/Parquet files in '{path}'; point data.path at a file.")
            return pd.concat([read_table(p, self.format, self.sep, ids) for p in files], ignore_index=True)
        return read_table(path, self.format, self.sep, ids)

    def _read_hf(self) -> pd.DataFrame:
        import datasets

        try:
            dataset = datasets.load_dataset(str(self.path), split=self.hf_split)
        except FileNotFoundError as exc:
            raise RecsysError(
                f"Hugging Face dataset '{self.path}' not found ({str(exc).splitlines()[0]}); "
                "check the name or pass a local file as data.path."
            ) from None
        except Exception as exc:  # network, hub and builder errors all mean the same thing to the user
            raise RecsysError(
                f"cannot load Hugging Face dataset '{self.path}': {str(exc).splitlines()[0]}; "
                "check the name and your connection, or pass a local file."
            ) from None
        return dataset.to_pandas()

    def load(self) -> SourceData:
        raw = self._read()
        if raw.empty:
            raise RecsysError(f"'{self.path}' has no rows; give a file with interactions.")
        roles = {"user": USER, "item": ITEM, "time": TIME, "rating": RATING}
        wanted = {role: self.columns.get(role) for role in roles}
        _check_columns(raw, wanted, str(self.path), "data.source.columns", "data.source")
        rename = {column: roles[role] for role, column in wanted.items() if column is not None}
        keep = list(rename)
        item_text = self.columns.get("item_text")
        interactions = raw[keep].rename(columns=rename)
        # What users say: the query an event answers, or the review the user wrote of the event's item
        # (recsys_cli.data.queries); one column, or several joined with ". " (summary and review text).
        for role in (QUERY, REVIEW):
            columns = self.columns.get(role)
            if not columns:
                continue
            interactions[role] = joined_text(raw, columns, role, str(self.path), "data.source.columns").to_numpy()
        items = None
        if item_text:
            _check_columns(raw, {"item_text": item_text}, str(self.path), "data.source.columns")
            items = raw[[wanted["item"], item_text]].drop_duplicates(wanted["item"], keep="last")
            items = pd.DataFrame({ITEM: items[wanted["item"]].to_numpy(), TITLE: items[item_text].to_numpy()})
            items[TEXT] = items[TITLE]
        if self.items_path:
            items = self._read_items()
        return SourceData(interactions=interactions, items=items)

    def _read_items(self) -> pd.DataFrame:
        path = _require_path(self.items_path, "the item table")
        item = self.item_columns.get("item", self.columns.get("item"))
        raw = read_table(path, "auto", text_columns=[item] if item else ())
        _check_columns(raw, {"item": item}, str(path), "data.source.item_columns")
        title, text = self.item_columns.get("title"), self.item_columns.get("text")
        where, key = str(path), "data.source.item_columns"
        items = pd.DataFrame({ITEM: raw[item]})
        # A table with only one text column shows it as the title too (predictions list titles).
        items[TITLE] = joined_text(raw, title or text, "title", where, key) if title or text else ""
        items[TEXT] = joined_text(raw, text, "text", where, key) if text else items[TITLE]
        return items

    def fingerprint(self) -> str:
        params = {"columns": self.columns, "format": self.format, "sep": self.sep, "item_columns": self.item_columns}
        if self._is_hf():
            return hash_files([], {**params, "hf": str(self.path), "split": self.hf_split})
        path = _require_path(self.path, "a table source")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_FORMATS) if path.is_dir() else [path]
        if self.items_path:
            files.append(_require_path(self.items_path, "the item table"))
        return hash_files(files, params)

    def describe(self) -> str:
        return f"table {self.path}"


def _malformed_line(path: Path, line: int) -> RecsysError:
    return RecsysError(
        f"line {line} of '{path}' does not hold exactly two fields; "
        "give one 'user item' pair per line (whitespace-separated)."
    )


class SeqTextSource(Source):
    """Published sequential-recommendation benchmark files: one ``user item`` pair per line, no times.

    The format of SASRec's ``ml-1m.txt`` / ``Beauty.txt`` (Kang & McAuley 2018) and the files derived
    from it: whitespace-separated, already in chronological order per user. The line order is the time
    order, so each event gets its line number as its timestamp and the stable time sort keeps the file's
    order. Blank lines are skipped; items have no titles (their ids stand in for them).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path

    def load(self) -> SourceData:
        path = _require_path(self.path, "a user-item text file")
        if path.is_dir():
            raise RecsysError(f"'{path}' is a folder; pass data.path=<file with one 'user item' pair per line>.")
        raw = self._read(path)
        # Row i is line i + 1 (blank lines are read as empty rows, so the numbering holds).
        blank = (raw[USER] == "").to_numpy()
        malformed = ~blank & ((raw[ITEM] == "") | (raw["extra"] != "")).to_numpy()
        if malformed.any():
            raise _malformed_line(path, int(np.flatnonzero(malformed)[0]) + 1)
        lines = np.flatnonzero(~blank)
        if len(lines) == 0:
            raise RecsysError(f"'{path}' is empty (no 'user item' lines); give a file with one pair per line.")
        interactions = pd.DataFrame(
            {USER: raw[USER].to_numpy()[lines], ITEM: raw[ITEM].to_numpy()[lines], TIME: lines.astype(np.int64) + 1}
        )
        item_ids = pd.unique(interactions[ITEM])
        return SourceData(interactions=interactions, items=pd.DataFrame({ITEM: item_ids, TITLE: item_ids}))

    def _read(self, path: Path) -> pd.DataFrame:
        # A third column catches lines with three fields (and a first line with more, which pandas would
        # otherwise truncate to the column count); a later line with more fields is a ParserError.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas warns when it truncates that first line
                return pd.read_csv(
                    path,
                    sep=r"\s+",
                    header=None,
                    names=[USER, ITEM, "extra"],
                    index_col=False,
                    dtype=str,
                    keep_default_na=False,  # ids such as "NA" or "null" are ids; missing fields read as ""
                    skip_blank_lines=False,
                    quoting=csv.QUOTE_NONE,
                    engine="c",
                )
        except pd.errors.ParserError as exc:
            line = re.search(r"in line (\d+)", str(exc))
            if line is None:
                raise RecsysError(f"cannot read '{path}': {str(exc).splitlines()[0]}; check the file.") from None
            raise _malformed_line(path, int(line.group(1))) from None

    def fingerprint(self) -> str:
        return hash_files([_require_path(self.path, "a user-item text file")], {"seqtxt": 1})

    def describe(self) -> str:
        return f"user-item text file {self.path}"


SPLIT_SUFFIXES = ("train", "valid", "test")


class UniSRecSource(Source):
    """The UniSRec / VQ-Rec dataset layout (Hou et al., KDD 2022; WWW 2023), used by many text-aware results.

    A folder with ``<name>.train.inter``, ``<name>.valid.inter`` and ``<name>.test.inter`` (RecBole atomic
    files with ``user_id``, ``item_id_list`` (the history, its last 50 items) and ``item_id`` (the target);
    the training file holds one row per training target, the validation and test files one row per user),
    optional ``<name>.text`` (item index, text) and ``<name>.item2index`` (raw id, index). Each user's full
    sequence is rebuilt (training targets in time order after the first item, then the validation and the
    test target) with positions as times, so leave-one-out gives back the published split; items get their
    raw ids where ``.item2index`` is there.
    """

    def __init__(self, path: str | None, dataset: str | None = None) -> None:
        self.path = path
        self.dataset = dataset

    def _files(self) -> dict[str, Path]:
        root = _require_path(self.path, "a UniSRec-layout dataset")
        folder = root if root.is_dir() else root.parent
        stems = sorted({p.name.removesuffix(".test.inter") for p in folder.glob("*.test.inter")})
        if self.dataset:
            stems = [s for s in stems if s == self.dataset]
        if len(stems) != 1:
            found = ", ".join(stems) or "none"
            raise RecsysError(
                f"expected one <name>.test.inter in '{folder}', found {found}; set data.source.dataset=<name>."
            )
        stem = stems[0]
        files = {}
        for suffix in (*(f"{split}.inter" for split in SPLIT_SUFFIXES), "text", "item2index"):
            candidate = folder / f"{stem}.{suffix}"
            if candidate.is_file():
                files[suffix] = candidate
            elif suffix.endswith(".inter"):
                raise RecsysError(
                    f"'{candidate}' is missing; the UniSRec layout needs train, valid and test .inter files."
                )
        return files

    @staticmethod
    def _rows(path: Path) -> pd.DataFrame:
        frame = read_atomic(path)
        _check_columns(frame, {"user": "user_id", "history": "item_id_list", "item": "item_id"}, str(path), "the file")
        return frame.assign(item_id_list=frame["item_id_list"].fillna("").astype(str))

    def load(self) -> SourceData:
        files = self._files()
        train, valid, test = (self._rows(files[f"{split}.inter"]) for split in SPLIT_SUFFIXES)
        # Training rows list each user's targets from the last back to the second; the row with the shortest
        # history (the last one) holds the first item. Users with one training event have no training row:
        # their validation history is that event.
        train = train.assign(order=np.arange(len(train)))
        last_row = train.groupby("user_id", sort=False)["order"].transform("max") == train["order"]
        first = train[last_row].assign(item_id=lambda f: f["item_id_list"].str.split().str[0], pos=0)
        targets = train.assign(pos=-train["order"])  # reversed file order = time order
        lone = valid[~valid["user_id"].isin(train["user_id"])]
        lone_items = lone.assign(item_id=lone["item_id_list"].str.split()).explode("item_id")
        lone_items = lone_items[lone_items["item_id"].notna() & (lone_items["item_id"] != "")]
        parts = [
            first[["user_id", "item_id"]].assign(stage=0, pos=first["pos"]),
            targets[["user_id", "item_id"]].assign(stage=1, pos=targets["pos"]),
            lone_items[["user_id", "item_id"]].assign(stage=1, pos=lone_items.groupby(level=0).cumcount()),
            valid[["user_id", "item_id"]].assign(stage=2, pos=0),
            test[["user_id", "item_id"]].assign(stage=3, pos=0),
        ]
        events = pd.concat(parts, ignore_index=True)
        events = events.sort_values(["user_id", "stage", "pos"], kind="stable").reset_index(drop=True)
        events[TIME] = events.groupby("user_id").cumcount() + 1
        raw_ids = None
        if "item2index" in files:
            mapping = pd.read_csv(
                files["item2index"], sep="\t", header=None, names=["raw", "index"], dtype=str, quoting=3
            )
            raw_ids = dict(zip(mapping["index"], mapping["raw"], strict=True))
        texts = None
        if "text" in files:
            table = pd.read_csv(files["text"], sep="\t", header=None, names=["item", "text"], dtype=str, quoting=3)
            if str(table.iloc[0, 0]).endswith(":token"):  # a typed header line
                table = table.iloc[1:]
            texts = dict(zip(table["item"], table["text"].fillna(""), strict=True))
        item_index = pd.unique(events["item_id"])
        item_ids = [raw_ids.get(i, i) for i in item_index] if raw_ids else list(item_index)
        if raw_ids:
            events[ITEM] = events["item_id"].map(raw_ids).fillna(events["item_id"])
        items = pd.DataFrame({ITEM: item_ids})
        if texts is not None:  # keyed by index (UniSRec's files) or by raw id
            by_index = [texts.get(i) for i in item_index]
            text = by_index if any(t is not None for t in by_index) else [texts.get(r) for r in item_ids]
            items[TITLE] = [t or "" for t in text]
            items[TEXT] = items[TITLE]
        interactions = events[["user_id", ITEM, TIME]].rename(columns={"user_id": USER})
        return SourceData(interactions=interactions, items=items)

    def fingerprint(self) -> str:
        return hash_files(list(self._files().values()), {"unisrec": 1, "dataset": self.dataset})

    def describe(self) -> str:
        return f"UniSRec-layout dataset at {self.path}"
