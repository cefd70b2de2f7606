"""Shared fixtures: a tiny synthetic shop and small models, so end-to-end tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_DATA = [
    "data=synthetic",
    "data.source.n_users=120",
    "data.source.n_categories=4",
    "data.source.items_per_category=12",
    "data.max_len=20",
    "data.batch_size=64",
]
TINY_MODEL = ["model.hidden_size=16", "model.inner_size=32", "model.num_heads=1", "model.num_layers=1"]


@pytest.fixture
def workdir(tmp_path: Path) -> list[str]:
    """Overrides that keep processed data and runs inside the test's temporary folder."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.runs_dir={tmp_path / 'runs'}"]


@pytest.fixture
def tiny(workdir: list[str]) -> list[str]:
    return [*workdir, *TINY_DATA, "trainer=debug", "logger=none"]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real-data tests run where ../shared/data exists)")
    return path
