"""Helpers shared by several test files (``from helpers import ...``: pytest puts ``Testing/`` on ``sys.path`` for
every test below it, through ``Testing/conftest.py``).

* :func:`tiny_model`: a real (untrained) V-Net model file with its card, small enough to run in a fraction of a
  second;
* :func:`train_child` and :func:`wait_for_iteration`: ``semisupseg train`` in a child process of this Python, and
  waiting until its events log reaches an iteration;
* :func:`alive` and :func:`gone`: whether a process lives, and waiting until some have ended (process-tree tests).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from semisupseg.checkpoint import make_card, save_model
from semisupseg.nets import VNet, VNetConfig
from semisupseg.training import read_events

REPO = Path(__file__).resolve().parents[1]


def tiny_model(path: Path, seed: int = 0, method: str = "supervised", classes=("background", "left atrium"),
               spacing=(1.25, 1.25, 1.25), patch=(64, 64, 48)) -> Path:
    """Write a V-Net with 4 base filters and an SDM head (weights from ``seed``) and its card (``method``, class
    names, ``spacing`` and ``patch`` **x, y, z**) to ``path`` (parents made); returns ``path``."""
    torch.manual_seed(seed)
    model = VNet(VNetConfig(num_classes=len(classes), n_filters=4, sdm_head=True)).eval()
    card = make_card(model, method=method, spacing_xyz=spacing, patch_size_xyz=patch, class_names=list(classes))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_model(path, model, card)


def train_child(*args: str, **popen_kw) -> subprocess.Popen:
    """Start ``python -m semisupseg train --no-bar ARGS`` (this checkout's package, one OpenMP thread) with stdout and
    stderr piped as text; ``popen_kw`` go to ``subprocess.Popen``."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "semisupseg", "train", "--no-bar", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kw)


def wait_for_iteration(proc: subprocess.Popen, events: Path, at_least: int, timeout: float = 180) -> int:
    """Wait until the events log ``events`` of the run ``proc`` is writing holds an ``iteration`` event at or past
    ``at_least``; returns the highest one seen. ``AssertionError`` with the child's output when it ended or
    ``timeout`` seconds passed first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if events.exists():
            seen = max((e["iteration"] for e in read_events(events) if e["event"] == "iteration"), default=0)
            if seen >= at_least:
                return seen
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before iteration {at_least}: {proc.communicate()}")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead); /proc where present, else ``kill(pid, 0)``."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(pids, timeout: float = 10.0) -> bool:
    """Wait up to ``timeout`` seconds until none of ``pids`` is alive; whether they all ended."""
    end = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True
