"""Cores shared among the recsys processes of a machine: each takes cores // live processes threads."""

import os
import subprocess
import sys
import time

import pytest
import torch

from recsys_cli.core import threads
from recsys_cli.errors import RecsysError


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_registry", lambda: tmp_path)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "_state", {"registered": None, "fixed": None})
    for name in ("RECSYS_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(before)


def test_processes_share_the_cores_and_a_finished_one_gives_them_back(registry):
    assert threads.share_cores("auto") == 4 and torch.get_num_threads() == 4  # alone: every core
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (registry / str(other.pid)).touch()  # a second recsys process starts
        assert threads.rebalance() == 2 and torch.get_num_threads() == 2
    finally:
        other.kill()
        other.wait()
    assert threads.rebalance() == 4  # it ended (killed: its marker is stale and removed)
    assert not (registry / str(other.pid)).exists() and (registry / str(os.getpid())).exists()


def test_a_number_or_the_environment_fixes_the_count(registry, monkeypatch):
    assert threads.share_cores(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.share_cores("auto") == 3
    with pytest.raises(RecsysError, match="threads=many"):
        monkeypatch.delenv("OMP_NUM_THREADS")
        threads.share_cores("many")


def test_never_fewer_than_one_thread(registry):
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(5)]
    try:
        for sleeper in sleepers:
            (registry / str(sleeper.pid)).touch()
        time.sleep(0.1)
        assert threads.share_cores("auto") == 1
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
