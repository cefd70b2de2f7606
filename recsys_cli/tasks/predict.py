"""`recsys predict`: a checkpoint's predictions for a file of requests, written atomically.

Recommenders: top-K items for users and/or item histories; text models: top-k intents (or a rating) per
text, optionally pooled embeddings. The checkpoint's model family does the work.
"""

from __future__ import annotations

from pathlib import Path

from recsys_cli.core.family import PredictRequest, PredictResult
from recsys_cli.errors import RecsysError


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
    """Predictions of the checkpoint for ``input_path`` (or every known user) to ``output``."""
    from recsys_cli.checkpoint import load_checkpoint
    from recsys_cli.core.family import family_of_checkpoint
    from recsys_cli.predict import output_format
    from recsys_cli.runtime import keep_freed_memory

    if top_k < 1:
        raise RecsysError(f"--top-k must be at least 1 (got {top_k}); pass e.g. --top-k 10.")
    if batch_size is not None and batch_size < 1:
        raise RecsysError(f"--batch-size must be at least 1 (got {batch_size}).")
    keep_freed_memory()
    request = PredictRequest(
        input_path=Path(input_path) if input_path is not None else None,
        output=Path(output),
        all_users=all_users,
        top_k=top_k,
        exclude_seen=exclude_seen,
        batch_size=batch_size,
        progress=progress,
        text_column=text_column,
        embeddings=Path(embeddings) if embeddings else None,
    )
    output_format(request.output)
    checkpoint = load_checkpoint(checkpoint_path)
    return family_of_checkpoint(checkpoint).predict(checkpoint, request)
