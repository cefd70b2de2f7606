"""What a person sees while a command runs: a bar on a terminal, one line per step in a log file (CI, nohup,
tee), nothing with ``--quiet``/``--json``.

The CLI sets the mode once (:func:`set_quiet`); library code asks for progress with :class:`progress_bar`
and :func:`note`; training's callbacks (:mod:`recsys_cli.core.epochs`) print through :func:`note` too.
"""

from __future__ import annotations

import sys
import time
from typing import Any

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence all progress output (``-q`` for scripts, ``--json`` for pipelines); errors still print."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def interactive() -> bool:
    """True when a person watches a terminal: bars redraw in place; otherwise progress is plain lines."""
    try:
        return not _state["quiet"] and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def note(message: str) -> None:
    """One progress line on stderr (flushed at once, so a log file shows it now), unless quiet."""
    if not _state["quiet"]:
        print(message, file=sys.stderr, flush=True)


class progress_bar:
    """``with progress_bar(enabled, total, label) as advance: ... advance()``.

    A rich bar on a terminal; in a log file a line when the loop starts and one when it ends; nothing when
    ``enabled`` is false or output is quiet.
    """

    def __init__(self, enabled: bool, total: int, label: str = "predicting") -> None:
        self.enabled, self.total, self.label = enabled and not is_quiet(), total, label
        self._bar: Any = None
        self._start = 0.0

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        self._start = time.perf_counter()
        if not interactive():
            note(f"{self.label}: {self.total:,} batches ...")
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and kind is None:
            note(f"{self.label}: done in {time.perf_counter() - self._start:.1f} s")
