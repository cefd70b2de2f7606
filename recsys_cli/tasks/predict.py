"""`recsys predict`: a checkpoint's predictions for a file of requests, written atomically.

Recommenders: top-K items for users and/or item histories; text models: top-k intents (or a rating) per
text, optionally pooled embeddings. The checkpoint's model family does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_cli.core.family import PredictRequest, PredictResult
from recsys_cli.errors import RecsysError


def predict(checkpoint_path: str | Path, request: PredictRequest) -> PredictResult:
    """Predictions of the checkpoint for ``request`` (its input file, or every known user)."""
    from recsys_cli.checkpoint import load_checkpoint
    from recsys_cli.core.family import family_of_checkpoint
    from recsys_cli.core.threads import share_cores
    from recsys_cli.predict import output_format
    from recsys_cli.runtime import keep_freed_memory

    if request.top_k < 1:
        raise RecsysError(f"--top-k must be at least 1 (got {request.top_k}); pass e.g. --top-k 10.")
    if request.batch_size is not None and request.batch_size < 1:
        raise RecsysError(f"--batch-size must be at least 1 (got {request.batch_size}).")
    keep_freed_memory()
    share_cores()
    output_format(request.output)
    checkpoint = load_checkpoint(checkpoint_path)
    return family_of_checkpoint(checkpoint).predict(checkpoint, request)


def run(checkpoint_path: str | Path, output: str | Path, **options: Any) -> PredictResult:
    """:func:`predict` with the request's fields as keywords (``input_path``, ``all_users``, ``top_k``, ...)."""
    return predict(checkpoint_path, PredictRequest(output=output, **options))
