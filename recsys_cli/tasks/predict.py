"""`recsys predict`: top-K recommendations for known users or given item histories, to a file.

Input rows carry a ``user_id`` (the dataset's own id) and/or a ``history`` of item ids (a list in
JSONL/Parquet, space- or comma-separated in CSV). A known user's stored history is extended by the
given items. Unknown item ids are dropped and counted; rows left with no history get the training
popularity ranking and are counted. Scoring runs in batches of users with one matrix product and
``torch.topk`` each; output is streamed and written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli.errors import RecsysError

USER_COLUMN = "user_id"
HISTORY_COLUMN = "history"


@dataclass
class PredictResult:
    output: Path
    rows: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def users_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def read_requests(path: Path, model_name: str = "the recommender") -> pd.DataFrame:
    from recsys_cli.data.sources import read_table

    if not path.is_file():
        raise RecsysError(f"input file '{path}' not found; pass --input users.csv (columns user_id and/or history).")
    frame = read_table(path)
    if USER_COLUMN not in frame.columns and HISTORY_COLUMN not in frame.columns:
        if "text" in frame.columns:
            raise RecsysError(
                f"'{path}' holds texts, but the checkpoint is a recommender (model={model_name}) that needs "
                f"'{USER_COLUMN}' or '{HISTORY_COLUMN}' rows; for intents pass a bert_intent checkpoint."
            )
        raise RecsysError(
            f"'{path}' has neither a '{USER_COLUMN}' nor a '{HISTORY_COLUMN}' column "
            f"(found: {', '.join(map(str, frame.columns[:10]))}); rename the column holding user ids "
            f"to '{USER_COLUMN}' or item lists to '{HISTORY_COLUMN}'."
        )
    return frame


def history_tokens(column: pd.Series) -> pd.DataFrame:
    """One row per (request row, position, item token), from lists or separated strings."""
    values = column.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    is_text = values.map(lambda v: isinstance(v, str))
    values = values.where(~is_text, values[is_text].astype(str).str.strip().str.split(r"[\s,]+", regex=True))
    exploded = values.explode()
    exploded = exploded[exploded.notna() & (exploded.astype(str) != "")]
    frame = pd.DataFrame({"row": exploded.index.to_numpy(), "item": exploded.astype(str).to_numpy()})
    frame["pos"] = frame.groupby("row").cumcount()
    return frame


def request_histories(requests: pd.DataFrame, data: dict[str, Any]) -> dict[str, Any]:
    """Each request row's history as CSR (``indptr``, ``items``, ``times``), its user index and counts.

    The history is the stored events of a known user, then the given items. Given items carry no time:
    they take the time of the row's last stored event (0 without one), i.e. "just now" for models that
    read event times. ``users`` is the user index of each row (0: unknown or none given).
    """
    from recsys_cli.data.datamodule import csr_rows

    n = len(requests)
    counts: dict[str, int] = {"rows": n}
    users = np.zeros(n, dtype=np.int64)
    parts = []
    if USER_COLUMN in requests.columns:
        user_index = pd.Index(data["user_ids"])
        user_idx = user_index.get_indexer(requests[USER_COLUMN].astype(str).to_numpy())
        user_idx[requests[USER_COLUMN].isna().to_numpy()] = -1
        known = np.flatnonzero(user_idx > 0)
        users[known] = user_idx[known]
        counts["known users"] = len(known)
        counts["unknown users"] = int((user_idx < 0).sum() - requests[USER_COLUMN].isna().sum())
        indptr = data["history_indptr"].numpy()
        batch_row, items = csr_rows(indptr, data["history_items"].numpy().astype(np.int64), user_idx[known])
        stored_times = data.get("history_times")
        if stored_times is None:  # checkpoints written before event times were stored: positions
            per_user = indptr[user_idx[known] + 1] - indptr[user_idx[known]]
            times = np.arange(len(batch_row)) - (np.cumsum(per_user) - per_user)[batch_row] + 1
        else:
            times = csr_rows(indptr, stored_times.numpy().astype(np.int64), user_idx[known])[1]
        position = np.arange(len(batch_row))  # csr_rows keeps each user's events in time order
        parts.append(
            pd.DataFrame({"row": known[batch_row], "part": 0, "pos": position, "item_idx": items, "time": times})
        )
    if HISTORY_COLUMN in requests.columns:
        tokens = history_tokens(requests[HISTORY_COLUMN].reset_index(drop=True))
        item_idx = pd.Index(data["item_ids"]).get_indexer(tokens["item"].to_numpy())
        counts["unknown items dropped"] = int((item_idx <= 0).sum())
        tokens = tokens.assign(part=1, item_idx=item_idx, time=np.nan)[item_idx > 0]
        parts.append(tokens[["row", "part", "pos", "item_idx", "time"]])
    events = pd.concat(parts, ignore_index=True).sort_values(["row", "part", "pos"], kind="stable")
    events["time"] = events.groupby("row")["time"].ffill().fillna(0)
    lengths = np.bincount(events["row"].to_numpy(), minlength=n)
    counts["popularity fallback (no history)"] = int((lengths == 0).sum())
    return {
        "indptr": np.concatenate([[0], np.cumsum(lengths)]),
        "items": events["item_idx"].to_numpy().astype(np.int64),
        "times": events["time"].to_numpy().astype(np.int64),
        "users": users,
        "counts": counts,
    }


def run(
    checkpoint_path: str | Path,
    output: str | Path,
    input_path: str | Path | None = None,
    all_users: bool = False,
    top_k: int = 10,
    exclude_seen: bool = True,
    batch_size: int | None = None,
    progress: bool = False,
    text_column: str = "text",
    embeddings: str | Path | None = None,
) -> PredictResult:
    """Recommendations (recommender checkpoints) or intents/ratings (text checkpoints) to ``output``.

    ``batch_size`` defaults to 128 users (activations stay in CPU cache) or 64 texts.
    """
    import pyarrow as pa
    import torch

    from recsys_cli.checkpoint import KEY, build_module, load_checkpoint
    from recsys_cli.data import batch as keys
    from recsys_cli.data.datamodule import csr_rows, last_window
    from recsys_cli.evaluation.protocol import mask_scores
    from recsys_cli.predict import RecommendationWriter, list_column, output_format
    from recsys_cli.runtime import keep_freed_memory

    if top_k < 1:
        raise RecsysError(f"--top-k must be at least 1 (got {top_k}); pass e.g. --top-k 10.")
    if batch_size is not None and batch_size < 1:
        raise RecsysError(f"--batch-size must be at least 1 (got {batch_size}).")
    keep_freed_memory()
    output = Path(output)
    output_format(output)
    checkpoint = load_checkpoint(checkpoint_path, kind=("recommender", "text"))
    if checkpoint[KEY]["kind"] == "text":
        from recsys_cli.tasks import text

        if input_path is None:
            raise RecsysError("a text model predicts for --input FILE (a table with a text column); give one.")
        return text.predict(
            checkpoint,
            Path(input_path),
            output,
            top_k=top_k,
            batch_size=batch_size or 64,
            text_column=text_column,
            embeddings=Path(embeddings) if embeddings else None,
            progress=progress,
        )
    if (input_path is None) == (not all_users):
        raise RecsysError("give either --input FILE or --all-users.")
    model_name = checkpoint[KEY]["config"]["model"]["name"]
    if embeddings or text_column != "text":
        option = "--embeddings" if embeddings else "--text-column"
        raise RecsysError(
            f"{option} is for text models, but '{checkpoint_path}' is a recommender (model={model_name}); "
            "pass a bert_intent / bert_rating checkpoint, or drop the option to recommend items."
        )
    batch_size = batch_size or 128
    data = checkpoint[KEY]["data"]
    if all_users:
        requests = pd.DataFrame({USER_COLUMN: data["user_ids"][1:]})
    else:
        requests = read_requests(Path(input_path), model_name=model_name)
    model = build_module(checkpoint)
    histories = request_histories(requests, data)
    indptr, items, times, counts = histories["indptr"], histories["items"], histories["times"], histories["counts"]
    item_ids = np.asarray(data["item_ids"], dtype=object)
    titles = np.asarray(data["item_titles"], dtype=object)
    popularity = data["item_popularity"].clone()
    popularity[0] = -torch.inf
    k = min(top_k, len(item_ids) - 1)
    user_column = (
        requests[USER_COLUMN].astype(str).where(requests[USER_COLUMN].notna(), None).to_numpy()
        if USER_COLUMN in requests.columns
        else np.full(len(requests), None, dtype=object)
    )

    def rank(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        starts, ends = indptr[rows], indptr[rows + 1]
        seen_rows, seen_items = csr_rows(indptr, items, rows)
        batch = {
            keys.HISTORY: torch.from_numpy(last_window(items, starts, ends, model.max_len)),
            keys.TIMESTAMPS: torch.from_numpy(last_window(times, starts, ends, model.max_len)),
            keys.USERS: torch.from_numpy(histories["users"][rows]),
            keys.SEEN_ROWS: torch.from_numpy(seen_rows),
            keys.SEEN_ITEMS: torch.from_numpy(seen_items),
        }
        scores = mask_scores(model.score_all(batch).float(), batch, mask_history=exclude_seen)
        scores[torch.from_numpy(ends == starts)] = popularity  # no history: the popularity ranking
        return torch.topk(scores, k, dim=1)

    # Rows are scored in batches of similar history length (models skip the padding a batch shares)
    # and written in input order, one chunk of many batches at a time.
    lengths = np.minimum(np.diff(indptr), model.max_len)
    chunk = batch_size * 16
    chunks = range(0, len(requests), chunk)
    start = time.perf_counter()
    total_batches = -(-len(requests) // batch_size)  # chunks are whole multiples of batch_size
    with (
        RecommendationWriter(output) as writer,
        torch.inference_mode(),
        _progress(progress, total_batches) as advance,
    ):
        for begin in chunks:
            rows = np.arange(begin, min(begin + chunk, len(requests)))
            order = rows[np.argsort(lengths[rows], kind="stable")]
            values = torch.empty(len(rows), k)
            indices = torch.empty(len(rows), k, dtype=torch.long)
            for sub in range(0, len(order), batch_size):
                part = order[sub : sub + batch_size]
                top = rank(part)
                values[part - begin], indices[part - begin] = top.values, top.indices
                advance()
            keep = torch.isfinite(values).numpy()  # fewer than k unseen items: a shorter list
            flat_items = indices.numpy()[keep]
            offsets = np.concatenate([[0], np.cumsum(keep.sum(1))])
            writer.write(
                pa.table(
                    {
                        "row": pa.array(rows),
                        "user_id": pa.array(user_column[rows], type=pa.string()),
                        "item_ids": list_column(item_ids[flat_items].astype(str), offsets),
                        "titles": list_column(titles[flat_items].astype(str), offsets),
                        "scores": list_column(values.numpy()[keep].astype(np.float32), offsets),
                    }
                )
            )
    seconds = time.perf_counter() - start
    return PredictResult(output=output, rows=len(requests), counts=counts, seconds=seconds)


class _progress:
    """A rich progress bar over batches, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task("predicting", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
