"""Atomic output: write to a temporary file beside the target, then rename over it.

A crash, an error or Ctrl-C mid-write therefore never leaves a half-written output behind, and an output
path that cannot be written (under a file, in a read-only folder) is a user error before anything is written.
A process killed outright (SIGKILL, out of memory) cannot clean up: its temporary file or folder, named after
the target and the process, stays hidden beside the target, and the next write of that target removes it and
says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys_cli.errors import RecsysError, warn

WRITABLE_FIX = "choose an output path in a folder you can write to"


def _reason(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be made: the file that stands where a folder should be, or the system's reason."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"'{blocker}' is a file, not a folder"
    return (exc.strerror or type(exc).__name__).lower()


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clear_debris(target: Path) -> list[Path]:
    """Remove the temporary files or folders that killed processes left while writing ``target``."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue  # not ours, or still being written by a live process
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        warn(f"removed {entry}: a partial copy of {target.name} left by an interrupted run (process {match.group(1)}).")
    return removed


def ensure_folder(folder: str | os.PathLike) -> Path:
    """``folder`` and its parents, created if missing; one that cannot be is a user error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if folder.exists() and not folder.is_dir():
            raise RecsysError(f"'{folder}' is a file, not a folder; {WRITABLE_FIX}.") from None
        raise RecsysError(f"cannot create the folder '{folder}': {_reason(folder, exc)}; {WRITABLE_FIX}.") from None
    return folder


def temp_file_beside(target: str | os.PathLike) -> Path:
    """An empty temporary file in ``target``'s folder (created if missing), to be renamed onto ``target``."""
    target = Path(target)
    if target.is_dir():
        raise RecsysError(f"'{target}' is a folder; give the output a file name in it, e.g. '{target / target.name}'.")
    ensure_folder(target.parent)
    try:
        clear_debris(target)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise RecsysError(f"cannot write '{target}': {_reason(target.parent, exc)}; {WRITABLE_FIX}.") from None
    os.close(fd)
    return Path(tmp)


def replace(tmp: Path, target: str | os.PathLike) -> None:
    """Rename the finished ``tmp`` onto ``target`` (atomic on one file system)."""
    try:
        os.replace(tmp, target)
    except OSError as exc:
        raise RecsysError(f"cannot write '{target}': {_reason(Path(target), exc)}; {WRITABLE_FIX}.") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success."""
    tmp_path = temp_file_beside(path)
    try:
        yield tmp_path
        replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``path``; it replaces ``path`` only once the block succeeded,
    so a failure keeps the old folder and a crash never leaves half of one at ``path``."""
    final = Path(path)
    ensure_folder(final.parent)
    try:
        clear_debris(final)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
    except OSError as exc:
        raise RecsysError(f"cannot write '{final}': {_reason(final.parent, exc)}; {WRITABLE_FIX}.") from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
