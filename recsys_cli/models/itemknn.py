"""ItemKNN: item-based collaborative filtering with cosine neighbours (Sarwar et al. 2001, WWW;
Deshpande & Karypis 2004, "Item-based top-N recommendation algorithms", ACM TOIS).

"Training" is one pass over the training windows that collects the (user, item) pairs of the binary
interaction matrix ``X`` (:class:`~recsys_cli.models.closed_form.FitOnInteractions`), then, without gradients,

    sim(i, j) = (X^T X)_ij / (||x_i|| ||x_j|| + shrink),     sim(i, i) = 0,

keeping each item's ``k_neighbors`` most similar items. The neighbour lists are ``[n_items + 1, k]``
buffers (memory O(items * k), built a block of items at a time), so a checkpoint round-trips them.
A user's score for item j sums sim(i, j) over the distinct items i of its history, restricted by
``neighbours``:

- ``target``: i among j's ``k`` neighbours (each candidate is scored from its own neighbourhood; the
  ItemKNN of Sarwar et al., of Ferrari Dacrema et al. 2019's baselines and of RecBole);
- ``history``: j among i's ``k`` neighbours (each history item votes for its neighbours; Deshpande &
  Karypis' top-N rule).

The history is what evaluation and predict give (the last ``data.max_len`` items), cut to its last
``history_len`` items when that is set: on ML-100K, where users rate films in bursts, the last three
rank a user's next item far better than the whole history (validation NDCG@10 0.116 against 0.064,
see conf/model/itemknn.yaml).
"""

from __future__ import annotations

import warnings

import torch

from recsys_cli.data import batch as keys
from recsys_cli.models.closed_form import FitOnInteractions, recent_history

BLOCK_CELLS = 1 << 24  # similarity rows are computed dense, this many cells (64 MiB of float32) at a time
NEIGHBOURS = ("target", "history")


def distinct(history: torch.Tensor) -> torch.Tensor:
    """``history`` with repeated items of a row replaced by 0 (padding), so each item counts once."""
    ordered = history.sort(1).values
    repeated = torch.zeros_like(ordered, dtype=torch.bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeated, 0)


def cosine_neighbours(
    users: torch.Tensor, items: torch.Tensor, n_items: int, k: int, shrink: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours ``(items [n_items + 1, k], weights [n_items + 1, k])`` of each item.

    ``users``/``items`` are the distinct (user, item) pairs of the binary interaction matrix. Rows of
    the similarity matrix are computed a block at a time (sparse ``X_block^T X``), so memory stays
    O(block * n_items + n_items * k) however large the catalogue.
    """
    n_users = int(users.max()) + 1 if len(users) else 1
    n_columns = n_items + 1
    matrix = torch.sparse_coo_tensor(
        torch.stack([users, items]), torch.ones(len(users)), (n_users, n_columns), check_invariants=False
    ).coalesce()
    norms = torch.bincount(items, minlength=n_columns).float().sqrt()
    neighbour_items = torch.zeros(n_columns, k, dtype=torch.long)
    neighbour_weights = torch.zeros(n_columns, k)
    block = max(1, BLOCK_CELLS // n_columns)
    for begin in range(1, n_columns, block):  # a loop over blocks of items, not over items
        end = min(begin + block, n_columns)
        inside = (items >= begin) & (items < end)
        transposed = torch.sparse_coo_tensor(
            torch.stack([items[inside] - begin, users[inside]]),
            torch.ones(int(inside.sum())),
            (end - begin, n_users),
            check_invariants=False,
        )
        with warnings.catch_warnings():  # torch's notice that sparse @ sparse goes through (beta) CSR
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            overlap = torch.sparse.mm(transposed, matrix).to_dense()  # [block, n_items + 1] co-occurrence counts
        similarity = overlap / (norms[begin:end, None] * norms[None, :] + shrink).clamp(min=1e-12)
        rows = torch.arange(end - begin)
        similarity[rows, rows + begin] = 0.0  # an item is not its own neighbour
        similarity[:, 0] = 0.0
        top = torch.topk(similarity, k, dim=1)
        neighbour_items[begin:end], neighbour_weights[begin:end] = top.indices, top.values
    return neighbour_items, neighbour_weights


class ItemKNN(FitOnInteractions):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        k_neighbors: int = 100,
        shrink: float = 10.0,
        neighbours: str = "target",
        history_len: int | None = None,
    ) -> None:
        super().__init__(n_items=n_items, max_len=max_len)
        from recsys_cli.errors import RecsysError

        if k_neighbors < 1 or shrink < 0:
            raise RecsysError(
                f"model.k_neighbors={k_neighbors} must be at least 1 and model.shrink={shrink} at least 0; "
                "e.g. model.k_neighbors=100 model.shrink=10."
            )
        if history_len is not None and history_len < 1:
            raise RecsysError(f"model.history_len={history_len} must be at least 1, or null for the whole history.")
        if neighbours not in NEIGHBOURS:
            raise RecsysError(f"unknown model.neighbours={neighbours!r}; use one of {', '.join(NEIGHBOURS)}.")
        self.save_hyperparameters()
        self.shrink = shrink
        self.neighbours = neighbours
        self.history_len = history_len
        self._target_scores: torch.Tensor | None = None  # ``target``: the sparse [n_items + 1]^2 matrix, built once
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_target_scores", None))
        self.k = max(1, min(k_neighbors, n_items - 1))
        self.register_buffer("neighbour_items", torch.zeros(n_items + 1, self.k, dtype=torch.long))
        self.register_buffer("neighbour_weights", torch.zeros(n_items + 1, self.k))

    def fit_interactions(self, users: torch.Tensor, items: torch.Tensor) -> None:
        neighbours, weights = cosine_neighbours(users, items, self.n_items, self.k, self.shrink)
        self.neighbour_items.copy_(neighbours)
        self.neighbour_weights.copy_(weights)
        self._target_scores = None

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history = batch[keys.HISTORY]  # left-padded: the most recent item last
        history = distinct(recent_history(history, self.history_len))  # padding (item 0) has no neighbours: weight 0
        scores = torch.zeros(history.shape[0], self.n_items + 1, device=history.device)
        if self.neighbours == "target":
            indicator = scores.scatter(1, history, 1.0)
            indicator[:, 0] = 0.0
            return (self.target_scores() @ indicator.T).T.contiguous()
        neighbours = self.neighbour_items[history].flatten(1)
        return scores.scatter_add_(1, neighbours, self.neighbour_weights[history].flatten(1))

    def target_scores(self) -> torch.Tensor:
        """Sparse CSR ``[n_items + 1, n_items + 1]``: row j holds sim(i, j) at the columns i of j's neighbours.

        It is the neighbour lists themselves (k entries a row, sorted by column), so building it needs no
        coalescing; ``W^T @ indicator^T`` is ~4x faster on CPU than ``indicator @ W``.
        """
        if self._target_scores is None:
            order = self.neighbour_items.argsort(1)
            columns, values = self.neighbour_items.gather(1, order), self.neighbour_weights.gather(1, order)
            rows = torch.arange(0, columns.numel() + 1, self.k, device=columns.device)
            with warnings.catch_warnings():  # torch's notice that CSR tensors are in beta
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                self._target_scores = torch.sparse_csr_tensor(
                    rows, columns.flatten(), values.flatten(), (self.n_items + 1,) * 2, check_invariants=False
                )
        return self._target_scores
