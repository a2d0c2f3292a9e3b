"""Shared pytest fixtures: paths to the read-only shared data (tests skip cleanly when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: ../shared next to the repository (override with SEMISUPSEG_SHARED)
SHARED = Path(os.environ.get("SEMISUPSEG_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"
TEST_DATA = REPO / "Testing" / "data"

# The suite's tensors are tiny: one intra-op thread avoids spin-waiting thread pools (measured 0.03 s vs 0.1-3 s per
# tiny V-Net forward with 2 threads on a loaded 2-core machine) and leaves the other core to subprocess tests.
torch.set_num_threads(1)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def la_dir() -> Path:
    """../shared/data/LA (skips when absent)."""
    return _need(DATA / "LA")


@pytest.fixture
def hippocampus_dir() -> Path:
    """../shared/data/Task04_Hippocampus (skips when absent)."""
    return _need(DATA / "Task04_Hippocampus")


@pytest.fixture
def peer_fixtures() -> Path:
    """../shared/fixtures/peer_vnet (skips when absent)."""
    return _need(FIXTURES / "peer_vnet")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
