"""A progress bar over batches for long loops outside Lightning (batch prediction), or nothing."""

from __future__ import annotations

from typing import Any


class progress_bar:
    """``with progress_bar(enabled, total, label) as advance: ... advance()`` — a rich bar, or a no-op."""

    def __init__(self, enabled: bool, total: int, label: str = "predicting") -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
