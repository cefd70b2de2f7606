"""Negatives for sampled ranking: per-user, seeded, vectorised, never a target or a history item.

Each user owns a SplitMix64 stream (Steele et al. 2014, "Fast splittable pseudorandom number
generators") seeded by ``(seed, user index)``; item ``i`` draws the ``i``-th number of that stream.
A user's negatives therefore depend on nothing but the seed and the user: not on the batch it lands
in, the process that scores it (DDP), the validation round or the run, so every round and every model
compared under one seed ranks the same candidates.

Sampling is without replacement in one ``topk`` over keys (no rejection loop): uniform sampling takes
the items with the smallest uniform draws; popularity sampling (probability proportional to training
counts) takes the smallest exponential race keys ``-log(u) / count`` (Efraimidis & Spirakis 2006,
"Weighted random sampling with a reservoir"), which equals drawing items one after another with
probability proportional to their counts among the items not yet drawn. Forbidden items (padding,
the user's history and targets; for popularity also items never seen in training) get an infinite
key, so they are never drawn; a user with fewer allowed items than asked for gets them all, and the
rest of its row is padding (0).
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


def uniform_draws(users: torch.Tensor, n_columns: int, seed: int) -> torch.Tensor:
    """``[B, n_columns]`` float64 in (0, 1): column ``i`` is the ``i``-th draw of each user's stream."""
    users = users.to(torch.int64)
    state = splitmix64(splitmix64(torch.full_like(users, int(seed))) ^ users)
    columns = torch.arange(n_columns, device=users.device, dtype=torch.int64)
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
    draws = uniform_draws(users, forbidden.shape[1], seed)
    if counts is None:
        keys = draws
    else:
        weights = counts.to(device=draws.device, dtype=torch.float64)
        keys = -torch.log(draws) / weights  # count 0 -> inf: never drawn
        forbidden = forbidden | (weights <= 0).unsqueeze(0)
    keys = keys.masked_fill(forbidden, torch.inf)
    width = min(num_negatives, keys.shape[1])
    values, items = torch.topk(keys, width, dim=1, largest=False)
    items = items.masked_fill(torch.isinf(values), 0)
    if width < num_negatives:
        items = torch.nn.functional.pad(items, (0, num_negatives - width))
    return items
