"""Process-wide settings for a task: quiet third-party chatter, keep real problems visible.

Lightning logs banners ("GPU available", "Tip: ..."), model summaries and dataloader hints at INFO level,
and a few libraries emit deprecation warnings that a user can do nothing about. ``quiet_libraries`` turns
those down (``RECSYS_VERBOSE=1`` keeps everything); warnings about the user's own setup stay on.
"""

from __future__ import annotations

import logging
import os
import warnings

_NOISY_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "torch.distributed")
_NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
    r".*GPU available but not used.*",
    r".*returned `None`, this fit will run with no optimizer.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    # The ranking evaluator gathers and reduces metrics itself before logging them.
    r".*It is recommended to use `self.log\(.*sync_dist=True.*",
)


def quiet_libraries() -> None:
    if os.environ.get("RECSYS_VERBOSE"):
        return
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pytorch_lightning|lightning|torch)\..*")
