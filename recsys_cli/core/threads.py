"""Share the CPU cores among the recsys processes running on this machine, so they never oversubscribe.

torch starts as many threads as there are cores in every process. Two trainings side by side on 2 cores then
run 4 threads that preempt each other inside every matrix product: measured here, far slower than the 2x
that sharing explains. With ``threads=auto`` (the default) each recsys process registers itself in a folder
of this user's temporary directory, and takes ``cores // live recsys processes`` threads (at least one);
training re-counts every epoch, so a run that started alone gives cores back when a second starts, and takes
them again when it ends. ``threads=<n>`` fixes the count; ``OMP_NUM_THREADS`` or ``RECSYS_THREADS`` in the
environment (the user's or a scheduler's choice) are obeyed as they are.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

from recsys_cli.io import process_alive

_state: dict[str, object] = {"registered": None, "fixed": None}


def cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or `taskset`'s limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _registry() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"recsys-{uid}-processes"


def live_processes() -> int:
    """recsys processes of this user now running on this machine (this one included once registered)."""
    count = 0
    try:
        entries = list(_registry().iterdir())
    except OSError:
        return 1
    for entry in entries:
        if not entry.name.isdigit():
            continue
        if process_alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)  # a process that was killed: no longer sharing
    return max(count, 1)


def _register() -> None:
    if _state["registered"] == os.getpid():
        return
    try:
        folder = _registry()
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / str(os.getpid())
        marker.touch()
    except OSError:
        return  # an unwritable temp dir: every process takes all cores, as torch would
    _state["registered"] = os.getpid()
    atexit.register(lambda: marker.unlink(missing_ok=True))


def share_cores(setting: object = "auto") -> int:
    """Set torch's thread count for this process by ``setting`` (``auto`` or a number); returns it."""
    import torch

    for name in ("RECSYS_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            _state["fixed"] = int(os.environ[name])
            break
    else:
        if str(setting) != "auto" and not (str(setting).isdigit() and int(str(setting)) > 0):
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"threads={setting}: give auto (share the cores) or a number of threads, e.g. threads=2.")
        _state["fixed"] = None if str(setting) == "auto" else int(str(setting))
    _register()
    threads = threads_now()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def threads_now() -> int:
    fixed = _state["fixed"]
    if fixed is not None:
        return int(fixed)  # type: ignore[arg-type]
    return max(1, cores() // live_processes())


def rebalance() -> int:
    """Re-count the live recsys processes and adjust torch's threads (called every training epoch)."""
    import torch

    threads = threads_now()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
