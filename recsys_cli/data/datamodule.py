"""Sequence datamodule: training windows and evaluation sets built once as tensors.

Training: each user's training sequence is cut, from its end, into windows of ``max_len + 1`` items
that overlap by one, so every training event but a user's first is a next-item target exactly once and
a causal model learns from all positions of a window at once. An epoch is one pass over windows
(about one per user on short histories), not over every prefix as in RecBole.

Evaluation: for each user with held-out events in a split, the history is every earlier event (its
last ``max_len`` fed to the model) and the targets are the held-out items of that split (one for
leave-one-out, all of the user's events in the window for a temporal split). Batches are sliced from
these tensors with ``__getitems__``, so no per-sample Python object is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recsys_cli.data import batch as keys
from recsys_cli.data.preprocess import TEST, TRAIN, VALID, Processed


def last_window(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Rows of ``flat[start:end][-length:]`` left-padded with 0, for many (start, end) pairs at once."""
    positions = ends[:, None] - length + np.arange(length)[None, :]
    valid = positions >= starts[:, None]
    out = np.zeros((len(ends), length), dtype=np.int64)
    out[valid] = flat[positions[valid]]
    return out


def window_ends(
    user_starts: np.ndarray, user_ends: np.ndarray, max_len: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, end) of every training window: windows end every ``stride`` items from a user's last event back."""
    stride = max_len if stride is None else stride
    lengths = user_ends - user_starts
    n_windows = np.where(lengths >= 2, np.ceil((lengths - 1) / stride), 0).astype(np.int64)
    owner = np.repeat(np.arange(len(lengths)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    index_in_user = np.arange(len(owner)) - first_window[owner]
    return owner, user_ends[owner] - index_in_user * stride


def training_windows(
    items: np.ndarray, user_starts: np.ndarray, user_ends: np.ndarray, max_len: int, stride: int | None = None
) -> np.ndarray:
    """Windows ``[N, max_len + 1]`` ending every ``stride`` items from each user's last event backwards.

    With ``stride == max_len`` (default) windows overlap by one item; with a shorter stride the last
    ``stride`` next-item positions of each window are its targets (:class:`WindowDataset`), so every
    event is still a target once per epoch but sees at least ``max_len - stride`` items of history.
    """
    owner, ends = window_ends(user_starts, user_ends, max_len, stride)
    return last_window(items, user_starts[owner], ends, max_len + 1)


def csr_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch_row, value) pairs of the CSR rows ``rows``: a vectorised ragged gather."""
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    batch_row = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return batch_row, values[np.repeat(starts, counts) + offsets]


def padded_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """CSR rows as a right-padded matrix (0 = padding)."""
    batch_row, vals = csr_rows(indptr, values, rows)
    counts = indptr[rows + 1] - indptr[rows]
    out = np.zeros((len(rows), max(1, int(counts.max(initial=0)))), dtype=np.int64)
    column = np.arange(len(vals)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[batch_row, column] = vals
    return out


class WindowDataset(Dataset):
    """Training windows; a batch of indices is sliced in one tensor operation.

    Only the last ``stride`` next-item positions of a window are targets (all of them by default).
    ``users`` (the owner of each window) and ``timestamps`` (aligned with ``windows``) are optional
    and, when given, travel in every batch as ``users`` and ``timestamps`` (aligned with ``history``).
    ``queries`` (query indices aligned with ``windows``) travel as ``queries``: rows of ``query_table``.
    """

    def __init__(
        self,
        windows: np.ndarray,
        stride: int | None = None,
        users: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        queries: np.ndarray | None = None,
        query_table: torch.Tensor | None = None,
    ) -> None:
        self.windows = torch.from_numpy(windows)
        self.queries = None if queries is None else torch.from_numpy(queries)
        self.query_table = query_table
        self.users = None if users is None else torch.from_numpy(np.asarray(users, dtype=np.int64))
        self.timestamps = None if timestamps is None else torch.from_numpy(np.asarray(timestamps, dtype=np.int64))
        length = self.windows.shape[1] - 1
        stride = length if stride is None else stride
        self.target_columns = torch.arange(length) >= length - stride

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(indices)
        window = self.windows[rows]
        history = window[:, :-1]
        # A user's first event has no history to predict it from: it is input only, never a target.
        batch = {keys.HISTORY: history, keys.NEXT_ITEMS: window[:, 1:] * ((history > 0) & self.target_columns)}
        if self.users is not None:
            batch[keys.USERS] = self.users[rows]
        if self.timestamps is not None:
            batch[keys.TIMESTAMPS] = self.timestamps[rows][:, :-1]
        if self.queries is not None:
            batch[keys.QUERIES] = self.query_table[self.queries[rows]]
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Shuffled order in which consecutive ``batch_size`` indices have similar lengths.

    Indices are shuffled, cut into chunks of ``batch_size * group_batches``, sorted by length inside
    each chunk and cut into batches whose order is shuffled again (as Hugging Face's
    ``group_by_length``). Models trim the padding a batch shares, so batches of similar length cost
    what their items cost rather than ``max_len``. It is a plain index sampler: under DDP Lightning
    wraps it in a distributed sampler that keeps the order per rank. Seeded; the epoch reshuffles.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, group_batches: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.group_batches
        batches = []
        for begin in range(0, len(order), chunk):
            part = order[begin : begin + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches.extend(np.array_split(part, range(self.batch_size, len(part), self.batch_size)))
        for index in rng.permutation(len(batches)):
            yield from batches[index].tolist()


class EvalDataset(Dataset):
    """Users to rank for one split: history, held-out targets and the items already seen.

    Optional: ``queries`` ``[users, L + 1]`` (the query of each history event and of the first target, as
    rows of ``query_table``) and ``groups`` (named bool flags per user: its first target is in the group).
    """

    def __init__(
        self,
        users: np.ndarray,
        history: np.ndarray,
        target_indptr: np.ndarray,
        target_items: np.ndarray,
        seen_indptr: np.ndarray,
        seen_items: np.ndarray,
        history_times: np.ndarray | None = None,
        queries: np.ndarray | None = None,
        query_table: torch.Tensor | None = None,
        groups: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.users = users
        self.queries = None if queries is None else torch.from_numpy(queries)
        self.query_table = query_table
        self.groups = {name: torch.from_numpy(flags) for name, flags in (groups or {}).items()}
        self.history = torch.from_numpy(history)
        self.history_times = None if history_times is None else torch.from_numpy(history_times)
        self.target_indptr, self.target_items = target_indptr, target_items
        self.seen_indptr, self.seen_items = seen_indptr, seen_items

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices)
        seen_rows, seen_items = csr_rows(self.seen_indptr, self.seen_items, rows)
        batch = {
            keys.USERS: torch.from_numpy(self.users[rows]),
            keys.HISTORY: self.history[torch.from_numpy(rows)],
            keys.TARGETS: torch.from_numpy(padded_rows(self.target_indptr, self.target_items, rows)),
            keys.SEEN_ROWS: torch.from_numpy(seen_rows),
            keys.SEEN_ITEMS: torch.from_numpy(seen_items.astype(np.int64)),
        }
        if self.history_times is not None:
            batch[keys.TIMESTAMPS] = self.history_times[torch.from_numpy(rows)]
        if self.queries is not None:
            batch[keys.QUERIES] = self.query_table[self.queries[torch.from_numpy(rows)]]
        for name, flags in self.groups.items():
            batch[keys.SEGMENT_PREFIX + name] = flags[torch.from_numpy(rows)]
        return batch


def eval_set(
    users: np.ndarray,
    items: np.ndarray,
    split: np.ndarray,
    stage: int,
    max_len: int,
    timestamps: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    query_table: torch.Tensor | None = None,
    groups: dict[str, np.ndarray] | None = None,
    history_free: bool = False,
) -> EvalDataset:
    """Evaluation users of ``stage``: history = events before it; for test, validation events count as history.

    ``queries``/``groups``: per event, carried for each user's history and first target. ``history_free``:
    every user is evaluated as a newcomer with no history (only the target's query, if any, to go by).
    """
    history_mask = split < stage
    if history_free:
        history_mask = np.zeros_like(history_mask)
    target_mask = split == stage
    n_users = int(users.max()) + 1
    target_counts = np.bincount(users[target_mask], minlength=n_users)
    eval_users = np.flatnonzero(target_counts)
    hist_counts = np.bincount(users[history_mask], minlength=n_users)
    hist_indptr = np.concatenate([[0], np.cumsum(hist_counts)])
    hist_items = items[history_mask]  # rows are sorted by user then time, so masks keep the order
    starts, ends = hist_indptr[eval_users], hist_indptr[eval_users + 1]
    history = last_window(hist_items, starts, ends, max_len)
    history_times = None if timestamps is None else last_window(timestamps[history_mask], starts, ends, max_len)
    t_indptr = np.concatenate([[0], np.cumsum(target_counts[eval_users])])
    targets = items[target_mask]
    # Compress the seen-item CSR to the evaluated users only.
    _, seen = csr_rows(hist_indptr, hist_items, eval_users)
    seen_indptr = np.concatenate([[0], np.cumsum(hist_counts[eval_users])])
    first_target = np.flatnonzero(target_mask)[t_indptr[:-1]]  # rows are by user then time
    query_windows = None
    if queries is not None:
        history_queries = last_window(queries[history_mask], starts, ends, max_len)
        query_windows = np.concatenate([history_queries, queries[first_target][:, None]], axis=1)
    flags = {name: np.asarray(values)[first_target] for name, values in (groups or {}).items()}
    return EvalDataset(
        eval_users, history, t_indptr, targets, seen_indptr, seen, history_times, query_windows, query_table, flags
    )


def event_times(interactions: Any) -> np.ndarray:
    """Integer event times per interaction: the timestamp column, or each user's event positions 1, 2, ..."""
    if "timestamp" in interactions.columns:
        return interactions["timestamp"].to_numpy().astype(np.int64)
    users = interactions["user_idx"].to_numpy()
    first = np.concatenate([[True], users[1:] != users[:-1]])
    start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    return np.arange(len(users)) - start + 1


def _identity(batch: Any) -> Any:
    return batch


class SequenceDataModule(pl.LightningDataModule):
    """Turns a processed dataset into training windows and full-ranking evaluation sets."""

    def __init__(
        self,
        processed: Processed,
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        group_by_length: bool = True,
        seed: int = 0,
        window_stride: int | None = None,
        event_queries: np.ndarray | None = None,
        query_table: torch.Tensor | None = None,
        event_groups: dict[str, np.ndarray] | None = None,
        history_free: bool = False,
    ) -> None:
        """``event_queries`` (a query index per processed event) with ``query_table`` (their features):
        every batch carries the queries its events answer. ``event_groups``: named bool flags per event,
        reported apart for evaluation targets in them. ``history_free``: evaluate users with no history."""
        super().__init__()
        if window_stride is not None and window_stride < 1:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"data.window_stride={window_stride} must be at least 1; use null for data.max_len.")
        # A stride of max_len or more is max_len (windows tile the sequence): a model's recipe may set a
        # stride that a short data.max_len override makes moot.
        self.window_stride = None if window_stride is None or window_stride >= max_len else window_stride
        self.group_by_length = group_by_length
        self.seed = seed
        self.processed = processed
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        inter = processed.interactions
        self.user_idx = inter["user_idx"].to_numpy().astype(np.int64)
        self.item_idx = inter["item_idx"].to_numpy().astype(np.int64)
        self.split = inter["split"].to_numpy()
        self.timestamps = event_times(inter)
        self.event_queries = None if query_table is None else np.asarray(event_queries, dtype=np.int64)
        self.query_table = query_table
        self.event_groups = event_groups
        self.history_free = history_free
        self.n_items = processed.n_items
        self._train: WindowDataset | None = None
        self._eval: dict[int, EvalDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            train = self.split == TRAIN
            users, items, times = self.user_idx[train], self.item_idx[train], self.timestamps[train]
            counts = np.bincount(users, minlength=int(self.user_idx.max()) + 1)
            ends = np.cumsum(counts)
            owner, window_end = window_ends(ends - counts, ends, self.max_len, self.window_stride)
            starts = (ends - counts)[owner]
            queries = None
            if self.event_queries is not None:
                queries = last_window(self.event_queries[train], starts, window_end, self.max_len + 1)
            self._train = WindowDataset(
                last_window(items, starts, window_end, self.max_len + 1),
                self.window_stride,
                users=owner,
                timestamps=last_window(times, starts, window_end, self.max_len + 1),
                queries=queries,
                query_table=self.query_table,
            )
        for split in (VALID, TEST):
            if split not in self._eval:
                self._eval[split] = eval_set(
                    self.user_idx,
                    self.item_idx,
                    self.split,
                    split,
                    self.max_len,
                    timestamps=self.timestamps,
                    queries=self.event_queries,
                    query_table=self.query_table,
                    groups=self.event_groups,
                    history_free=self.history_free,
                )

    def sizes(self) -> dict[str, int]:
        """Training windows, and users evaluated in validation and test."""
        self.setup()
        return {"train": len(self._train), "valid": len(self._eval[VALID]), "test": len(self._eval[TEST])}

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=_identity,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.group_by_length:
            return self._loader(self._train, self.batch_size, shuffle=True)
        lengths = (self._train.windows > 0).sum(1).numpy()
        sampler = LengthGroupedSampler(lengths, self.batch_size, seed=self.seed)
        return self._loader(self._train, self.batch_size, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._eval[VALID], self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._eval[TEST], self.eval_batch_size, shuffle=False)
