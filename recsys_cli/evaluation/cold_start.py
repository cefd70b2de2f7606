"""Cold-start items: a seeded share of the catalogue held out of training, evaluated apart.

``eval.cold_start_items=<share>`` draws ``round(share * n_items)`` items with ``eval.cold_start_seed`` and
removes every training event on them, so no model learns anything about them from interactions: they
stay in the catalogue (every model ranks them among all items) and in the validation and test splits.
Evaluation then reports, beside the usual metrics, the metrics over test targets that are such new items
(``test/cold/*``: each user's cold targets only, ranked among all items; ``test/cold_within/*``: the same
targets ranked among the new items only), and the baseline an ID-only system falls back to for new items,
in two forms that both rank only the new items (compare them with ``cold_within``):

- ``cold_pop``: by their popularity in the validation events, the new items' first interactions that
  are known before any test event (with leave-one-out, each user's validation event precedes their test
  event): a strong fallback, for a system that already saw some early clicks on its new items;
- ``cold_random``: in a seeded random order, which is what popularity from training gives (no new item
  has a training event): all an ID-only model knows about a new item.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from recsys_cli.errors import RecsysError

SEGMENT = "cold"
BASELINES = ("cold_pop", "cold_random")


def draw_cold_items(n_items: int, share: float, seed: int) -> np.ndarray:
    """``[n_items + 1]`` bool, True for the held-out items (index 0, padding, never)."""
    if not 0.0 <= share < 1.0:
        raise RecsysError(f"eval.cold_start_items={share} must be a share in [0, 1), e.g. 0.1.")
    cold = np.zeros(n_items + 1, dtype=bool)
    count = round(share * n_items)
    if count:
        cold[1 + np.random.default_rng(seed).choice(n_items, size=count, replace=False)] = True
    return cold


def hold_out(processed: Any, share: float, seed: int) -> Any:
    """The processed data without training events on the drawn items; its ``cold_start`` holds the mask,
    the baselines' scores and counts for the report."""
    from recsys_cli.data.preprocess import TEST, TRAIN, VALID

    cold = draw_cold_items(processed.n_items, share, seed)
    inter = processed.interactions
    items = inter["item_idx"].to_numpy()
    train = inter["split"].to_numpy() == TRAIN
    removed = train & cold[items]
    kept = inter[~removed].reset_index(drop=True)
    valid = kept["split"].to_numpy() == VALID
    popularity = np.bincount(kept["item_idx"].to_numpy()[valid], minlength=processed.n_items + 1).astype(float)
    info = {
        "share": share,
        "seed": seed,
        "items": int(cold.sum()),
        "removed_training_events": int(removed.sum()),
        "test_targets_on_new_items": int(((inter["split"].to_numpy() == TEST) & cold[items]).sum()),
    }
    random = np.random.default_rng(seed + 1).random(processed.n_items + 1)
    baselines = {  # ties in popularity are broken by the same seeded random order
        "cold_pop": np.where(cold, popularity + 0.5 * random, -np.inf),
        "cold_random": np.where(cold, random, -np.inf),
    }
    return replace(processed, interactions=kept, cold_start={"mask": cold, "baselines": baselines, "info": info})
