"""EASE: an item-item linear model fitted in closed form (Steck 2019, "Embarrassingly Shallow Autoencoders
for Sparse Data", WWW).

From the binary user-item matrix ``X`` of the training data (one counting pass, see
:class:`~recsys_cli.models.closed_form.FitOnInteractions`) the item-item weights are the ridge regression of
every item on all the others, with the constraint that no item predicts itself:

    P = (X^T X + reg_weight * I)^-1,      B_ij = -P_ij / P_jj  (i != j),      B_jj = 0,

and a user's scores are ``x_u B``, ``x_u`` the indicator of the distinct items of the history. No gradient
step, no epochs: one ``[items, items]`` inversion (float64, then float32), so the catalogue must fit twice in
memory as a dense matrix (``model.max_items`` guards it: 20,000 items take 3.2 GB while fitting).
"""

from __future__ import annotations

import warnings

import torch

from recsys_cli.data import batch as keys
from recsys_cli.errors import RecsysError
from recsys_cli.models.closed_form import FitOnInteractions, recent_history


def ease_weights(users: torch.Tensor, items: torch.Tensor, n_items: int, reg_weight: float) -> torch.Tensor:
    """``B`` ``[n_items + 1, n_items + 1]`` (row and column 0: padding, zero) from the pairs of ``X``."""
    n_users = int(users.max()) + 1 if len(users) else 1
    n = n_items + 1
    matrix = torch.sparse_coo_tensor(
        torch.stack([users, items]), torch.ones(len(users), dtype=torch.float64), (n_users, n), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # torch's notice that sparse @ sparse goes through (beta) CSR
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        gram = torch.sparse.mm(matrix.t().coalesce(), matrix).to_dense()  # X^T X, co-occurrence counts
    gram.diagonal().add_(reg_weight)
    gram[0, 0] = 1.0  # padding: never occurs, kept invertible
    precision = torch.linalg.inv(gram)
    weights = precision / (-precision.diagonal())[None, :]
    weights.fill_diagonal_(0.0)
    weights[0, :] = 0.0
    weights[:, 0] = 0.0
    return weights.float()


class EASE(FitOnInteractions):
    def __init__(
        self,
        n_items: int,
        max_len: int,
        reg_weight: float = 250.0,
        history_len: int | None = None,
        max_items: int = 20000,
    ) -> None:
        super().__init__(n_items=n_items, max_len=max_len)
        if reg_weight <= 0:
            raise RecsysError(f"model.reg_weight={reg_weight} must be above 0 (the ridge penalty), e.g. 250.")
        if history_len is not None and history_len < 1:
            raise RecsysError(f"model.history_len={history_len} must be at least 1, or null for the whole history.")
        if n_items > max_items:
            gigabytes = 2 * 8 * (n_items + 1) ** 2 / 1e9
            raise RecsysError(
                f"model=ease holds a dense {n_items:,} x {n_items:,} item matrix (~{gigabytes:.0f} GB while "
                f"fitting), more than model.max_items={max_items:,} allows; raise model.max_items if the memory is "
                "there, or use model=itemknn (sparse neighbours)."
            )
        self.save_hyperparameters()
        self.reg_weight = reg_weight
        self.history_len = history_len
        self.register_buffer("weights", torch.zeros(n_items + 1, n_items + 1))

    def fit_interactions(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self.weights.copy_(ease_weights(users, items, self.n_items, self.reg_weight))

    def score_all(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history = recent_history(batch[keys.HISTORY], self.history_len)
        indicator = torch.zeros(history.shape[0], self.n_items + 1, device=history.device)
        indicator.scatter_(1, history, 1.0)  # repeats count once; padding hits column 0, whose weights are 0
        return indicator @ self.weights
