"""Batch-prediction output: JSONL, CSV or Parquet chosen by extension, streamed and written atomically.

Batches arrive as Arrow tables with list columns (``item_ids``, ``titles``, ``scores``); each writer
serialises a whole batch at once (no Python loop over rows) into a temp file that is renamed onto the
output path only when every batch is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_cli.errors import RecsysError
from recsys_cli.io import replace, temp_file_beside

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise RecsysError(f"cannot tell the output format of '{path}'; end it in .jsonl, .csv or .parquet.")
    return fmt


def list_column(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """A ragged list column from flat values and row offsets."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


class RecommendationWriter:
    """Context manager: ``write(table)`` per batch; the file appears only on a clean exit."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.tmp = temp_file_beside(self.path)  # an output path that cannot be written fails here, before any work
        self._writer = None
        self._handle = None
        self.rows = 0

    def __enter__(self) -> RecommendationWriter:
        if self.format == "jsonl":
            self._handle = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.format == "jsonl":
            table.to_pandas().to_json(self._handle, orient="records", lines=True, force_ascii=False)
        elif self.format == "parquet":
            import pyarrow.parquet as pq

            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, table.schema)
            self._writer.write_table(table)
        else:
            import pyarrow.csv as pacsv

            flat = pa.table({name: _flatten_for_csv(name, table[name]) for name in table.column_names})
            if self._writer is None:
                self._writer = pacsv.CSVWriter(self.tmp, flat.schema)
            self._writer.write_table(flat)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._handle is not None:
                self._handle.close()
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def _flatten_for_csv(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """CSV has no lists: item ids and scores are space-separated, titles and explanations (which hold spaces) ' | '."""
    if not pa.types.is_list(column.type):
        return column
    values = column if pa.types.is_string(column.type.value_type) else pc.cast(column, pa.list_(pa.string()))
    return pc.binary_join(values, " | " if name in ("titles", "because") else " ")
