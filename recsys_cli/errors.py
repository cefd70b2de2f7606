"""The user-facing error type: a problem the user caused and can fix.

Library code raises :class:`RecsysError` with one line that names the problem and the fix; only the
CLI turns it into output (``error: ...`` on stderr, exit code 2). Anything else is a bug.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class RecsysError(Exception):
    """A problem caused by the user's input, config or files; the message says how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # always one line


def warn(message: str) -> None:
    """Tell the user about a problem that did not stop the command: one ``warning: ...`` line on stderr, in
    the style of the CLI's ``error: ...`` (not Python's ``warnings``, whose two lines name a source file)."""
    from rich.console import Console
    from rich.markup import escape

    line = " ".join(message.split())
    Console(stderr=True).print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
