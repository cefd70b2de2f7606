"""Negatives for sampled ranking: per-user, seeded, vectorised, never a target or a history item.

Each user owns a SplitMix64 stream (Steele et al. 2014, "Fast splittable pseudorandom number
generators") seeded by ``(seed, user index)``, and every draw below is a fixed position of it.
A user's negatives therefore depend on nothing but the seed and the user: not on the batch it lands
in, the process that scores it (DDP), the validation round or the run, so every round and every model
compared under one seed ranks the same candidates.

Sampling is without replacement, in two vectorised passes (no loop over users):

1. Oversample and reject: each user draws ``2 * num_negatives + 16`` items with replacement (uniform,
   or by inverse CDF in proportion to training counts), drops the forbidden ones (padding, the user's
   history and targets) and repeats, and keeps the first ``num_negatives`` left. Keeping the first
   distinct allowed draws is sequential sampling without replacement.
2. Fallback, for the users that step 1 left short (a history covering most of the catalogue, or a
   catalogue not much larger than ``num_negatives``): one ``topk`` over per-item keys drawn from later
   positions of the user's stream. Uniform sampling takes the smallest uniform keys; popularity sampling
   the smallest exponential race keys ``-log(u) / count`` (Efraimidis & Spirakis 2006, "Weighted random
   sampling with a reservoir"), the same distribution as step 1. Forbidden items get an infinite key; a
   user with fewer allowed items than asked for gets them all, and the rest of its row is padding (0).

Popularity sampling never draws an item that has no training events.
"""

from __future__ import annotations

import torch

SAMPLERS = ("uniform", "popularity")

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # SplitMix64's constants as signed int64 (torch has no uint64 math)
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (``>>`` is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function of state ``x`` (int64, arithmetic modulo 2**64)."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def uniform_draws(users: torch.Tensor, n_columns: int, seed: int, offset: int = 0) -> torch.Tensor:
    """``[B, n_columns]`` float64 in (0, 1): column ``i`` is draw ``offset + i`` of each user's stream."""
    users = users.to(torch.int64)
    state = splitmix64(splitmix64(torch.full_like(users, int(seed))) ^ users)
    columns = torch.arange(offset, offset + n_columns, device=users.device, dtype=torch.int64)
    bits = splitmix64(state.unsqueeze(1) + columns.unsqueeze(0) * _GOLDEN)
    return (_shift_right(bits, 11).double() + 0.5) / 2.0**53  # the top 53 bits, centred: never 0 or 1


def sample_negatives(
    users: torch.Tensor,
    forbidden: torch.Tensor,
    num_negatives: int,
    seed: int,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, num_negatives]`` item indices, distinct per row, none of them forbidden (0 = no item left).

    ``forbidden [B, n_items + 1]`` bool marks each user's padding, history and targets. ``counts``
    (training counts ``[n_items + 1]``) switches from uniform to popularity sampling.
    """
    n_columns = forbidden.shape[1]
    weights = None if counts is None else counts.to(device=forbidden.device, dtype=torch.float64)
    if weights is not None:
        forbidden = forbidden | (weights <= 0).unsqueeze(0)
    n_draws = 2 * num_negatives + 16
    if n_draws >= n_columns:  # a small catalogue: the exact pass costs no more than oversampling
        return _topk_sample(users, forbidden, num_negatives, seed, weights, offset=0)
    negatives, short = _rejection_sample(users, forbidden, num_negatives, seed, weights, n_draws)
    if short.any():
        negatives[short] = _topk_sample(users[short], forbidden[short], num_negatives, seed, weights, offset=n_draws)
    return negatives


def _rejection_sample(
    users: torch.Tensor,
    forbidden: torch.Tensor,
    num_negatives: int,
    seed: int,
    weights: torch.Tensor | None,
    n_draws: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_negatives`` distinct allowed items of ``n_draws`` draws; rows left short are flagged."""
    draws = uniform_draws(users, n_draws, seed)
    n_items = forbidden.shape[1] - 1
    if weights is None:
        items = 1 + (draws * n_items).long().clamp(max=n_items - 1)
    else:
        cumulative = torch.cumsum(weights[1:], 0)
        items = 1 + torch.searchsorted(cumulative, draws * cumulative[-1], right=True).clamp(max=n_items - 1)
    # a repeat of an earlier draw in the row: a stable sort puts the first occurrence first
    order = torch.sort(items, dim=1, stable=True)
    repeat_sorted = torch.zeros_like(items, dtype=torch.bool)
    repeat_sorted[:, 1:] = order.values[:, 1:] == order.values[:, :-1]
    repeat = torch.zeros_like(repeat_sorted).scatter_(1, order.indices, repeat_sorted)
    keep = ~forbidden.gather(1, items) & ~repeat
    position = torch.cumsum(keep, 1) - 1
    keep &= position < num_negatives
    negatives = torch.zeros(items.shape[0], num_negatives, dtype=torch.long, device=items.device)
    rows = torch.arange(items.shape[0], device=items.device).unsqueeze(1).expand_as(items)
    negatives[rows[keep], position[keep]] = items[keep]
    return negatives, keep.sum(1) < num_negatives


def _topk_sample(
    users: torch.Tensor,
    forbidden: torch.Tensor,
    num_negatives: int,
    seed: int,
    weights: torch.Tensor | None,
    offset: int,
) -> torch.Tensor:
    """Exact sampling without replacement from per-item keys (stream positions from ``offset`` on)."""
    draws = uniform_draws(users, forbidden.shape[1], seed, offset=offset)
    keys = draws if weights is None else -torch.log(draws) / weights  # weight 0 -> inf: never drawn
    keys = keys.masked_fill(forbidden, torch.inf)
    width = min(num_negatives, keys.shape[1])
    values, items = torch.topk(keys, width, dim=1, largest=False)
    items = items.masked_fill(torch.isinf(values), 0)
    if width < num_negatives:
        items = torch.nn.functional.pad(items, (0, num_negatives - width))
    return items
