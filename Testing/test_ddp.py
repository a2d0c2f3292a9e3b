"""Distributed data parallel with 2 CPU processes (torchrun, gloo) against the single-process run.

"Equivalent" here means: the same global batch (each rank takes its half of the slots the single process samples,
see ``semisupseg.training.batches``), the same initial weights and gradients averaged over the ranks. Batch
statistics: on CUDA BatchNorm becomes SyncBatchNorm (statistics over the global batch); on CPU torch's DDP refuses
SyncBatchNorm, so each rank normalises its own half — not the single-process computation; the test therefore uses a
network without batch-dependent normalisation (``normalization: none``; instance norm would do too). For a loss that is a mean over equally sized per-sample terms (voxel
cross-entropy) the averaged gradient is mathematically the single-process gradient, so losses and weights agree up
to floating-point summation order (~1e-6 relative per step). The default soft Dice sums over the whole batch before
dividing and is *not* such a mean: with Dice each rank optimises the Dice of its own half, close to but not exactly
the single-process objective — hence the test uses cross-entropy only.

Measured (this config, 6 iterations): without normalisation the 2-process run matches the single process to a
relative loss difference of 1.2e-7 and weights within 3e-8; with BatchNorm on CPU the losses differ by up to 4 %.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semisupseg.checkpoint import load_state
from semisupseg.training import read_events

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(root: Path) -> Path:
    import SimpleITK as sitk

    rng = np.random.default_rng(9)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(5):
        label = np.zeros((16, 20, 20), np.uint8)
        label[4:12, 3 + i:13 + i, 4:14] = 1
        image = (rng.normal(0, 1, label.shape) + 2.0 * label).astype(np.float32)
        for arr, folder in ((image, "imagesTr"), (label, "labelsTr")):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(root / folder / f"c{i}.nii.gz"))
    return root


@pytest.mark.slow
def test_two_gloo_processes_match_single_process(tmp_path):
    data = _dataset(tmp_path / "data")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({
        "method": "supervised", "iterations": 6, "batch_size": 4, "labeled_batch_size": 4, "device": "cpu",
        "amp": "off", "num_threads": 1, "val_every": 6, "save_every": 3, "seed": 4,
        "method_params": {"dice_weight": 0.0, "ce_weight": 1.0},
        "optim": {"lr": 0.05}, "model": {"n_filters": 2, "normalization": "none"},
        "data": {"labeled": str(data), "validation": 1, "patch_size": [16, 16, 16]},
    }))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "semisupseg", "train", "--no-bar", "--config", str(cfg),
         "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stderr.count("finished 6 iterations") == 1  # rank 0 speaks for the run, not every process
    # rank 0 refuses to start (the folder holds a run): rank 1, waiting to join, ends with it at torchrun's SIGTERM
    # (it sat 30 s until torchrun's SIGKILL)
    import time

    t0 = time.monotonic()
    refused = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "semisupseg", "train", "--no-bar", "--config", str(cfg),
         "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=240)
    assert refused.returncode != 0 and "holds a run; use --resume" in refused.stderr
    assert time.monotonic() - t0 < 25 and "forcefully exiting via 9" not in refused.stderr, refused.stderr[-2000:]
    from semisupseg.cli import main

    assert main(["train", "--no-bar", "--config", str(cfg), "--out", str(tmp_path / "single")]) == 0

    ev_ddp = read_events(tmp_path / "ddp" / "events.jsonl")
    ev_one = read_events(tmp_path / "single" / "events.jsonl")
    assert [e for e in ev_ddp if e["event"] == "started"][0]["world_size"] == 2
    l_ddp = [e["loss"] for e in ev_ddp if e["event"] == "iteration"]
    l_one = [e["loss"] for e in ev_one if e["event"] == "iteration"]
    assert len(l_ddp) == len(l_one) == 6
    np.testing.assert_allclose(l_ddp, l_one, rtol=1e-4, atol=1e-6)
    assert l_one[-1] < l_one[0]
    s_ddp, s_one = load_state(tmp_path / "ddp" / "resume.pt"), load_state(tmp_path / "single" / "resume.pt")
    assert s_ddp["world_size"] == 2 and s_ddp["iteration"] == 6
    for k, v in s_one["model"].items():
        assert not k.startswith("module."), k
        if v.is_floating_point():
            torch.testing.assert_close(s_ddp["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    # only rank 0 wrote: one started event, one finished event
    assert [e["event"] for e in ev_ddp].count("started") == 1 and ev_ddp[-1]["event"] == "finished"


def _collectives_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from semisupseg.training import distributed as du

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    info = du.DistInfo(rank=rank, world_size=2, backend="gloo")
    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(1.0)
        module.bias.fill_(0.0)
    module(torch.full((1, 3), float(rank + 1))).sum().backward()   # grad of weight: rank + 1 everywhere
    module.bias.grad = None if rank == 1 else module.bias.grad       # a parameter without grad on one rank
    du.all_reduce_grads(module, info)
    result = {"weight_grad": module.weight.grad.tolist(), "bias_grad": module.bias.grad.tolist(),
              "flag": du.any_flag(rank == 1, info), "gathered": du.all_gather_object({"r": rank}, info),
              "broadcast": du.broadcast_object("from0" if rank == 0 else None, info),
              "mean": du.all_reduce_mean(float(rank), info)}
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_collectives_average_method_owned_gradients(tmp_path):
    """``ctx.all_reduce_grads`` (method-owned networks such as discriminators) averages gradients over 2 gloo
    processes; a parameter without gradient on one rank counts as zero there."""
    import torch.multiprocessing as mp

    mp.start_processes(_collectives_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    for rank in range(2):
        r = json.loads((tmp_path / f"{rank}.json").read_text())
        assert np.allclose(r["weight_grad"], 1.5)            # mean of 1 and 2
        assert np.allclose(r["bias_grad"], 0.5)              # (1 + 0) / 2
        assert r["flag"] is True and r["gathered"] == [{"r": 0}, {"r": 1}] and r["broadcast"] == "from0"
        assert r["mean"] == 0.5


@pytest.mark.slow
def test_a_failing_rank_is_the_cause_the_run_records(tmp_path):
    """Rank 1 meets a bad file at iteration 3: rank 0 (which writes the run's events and heartbeat) only saw
    'Connection closed by peer'; it now records and reports rank 1's own error."""
    data = _dataset(tmp_path / "data")
    wrapper = tmp_path / "fail_on_rank1.py"
    wrapper.write_text(
        "import os, sys\n"
        "from semisupseg.training import engine\n"
        "from semisupseg.errors import InputError\n"
        "step = engine.Trainer._train_step\n"
        "def failing(self):\n"
        "    if os.environ.get('RANK') == '1' and self.iteration == 3:\n"
        "        raise InputError('cannot read image: truncated file', '/data/x.nii.gz')\n"
        "    return step(self)\n"
        "engine.Trainer._train_step = failing\n"
        "from semisupseg.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(wrapper), "train", "--no-bar", "--method", "supervised",
         "--labeled", str(data), "--validation", "1", "--patch-size", "16", "16", "16", "--batch-size", "4",
         "--labeled-batch-size", "4", "--device", "cpu", "--set", "model.n_filters=2", "--set", "amp=off",
         "--iterations", "50", "--out", str(run)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0 and (run / "events.jsonl").exists(), r.stderr[-3000:]
    failed = [e for e in read_events(run / "events.jsonl") if e["event"] == "failed"]
    assert failed and failed[-1]["message"] == ("PeerFailed: another process of the run failed: rank 1: "
                                                "/data/x.nii.gz: cannot read image: truncated file")
    assert json.loads((run / "heartbeat.json").read_text())["status"] == "failed"
    assert "error: another process of the run failed: rank 1: /data/x.nii.gz" in r.stderr
    assert not list(run.glob(".failed_rank*"))


def _children(pid: int):
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_of_a_killed_torchrun_stop_and_save_their_state(tmp_path):
    """torchrun killed with SIGKILL cannot pass a signal on: its workers went on training as orphans until the run's
    end. Each worker now asks for SIGTERM when its launcher dies: they stop within seconds, rank 0 saving
    ``resume.pt`` (the run resumes)."""
    import signal
    import time

    from helpers import gone

    data = _dataset(tmp_path / "data")
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "semisupseg", "train", "--no-bar", "--method", "supervised",
         "--labeled", str(data), "--validation", "1", "--patch-size", "16", "16", "16", "--batch-size", "4",
         "--labeled-batch-size", "4", "--device", "cpu", "--set", "model.n_filters=2", "--set", "amp=off",
         "--iterations", "3000", "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    workers = []
    try:
        end = time.monotonic() + 180
        while not (run / "events.jsonl").exists() or '"iteration"' not in (run / "events.jsonl").read_text():
            assert launcher.poll() is None and time.monotonic() < end, launcher.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        workers = _children(launcher.pid)  # torchrun starts them in sessions of their own: killpg misses them
        assert len(workers) == 2
        launcher.kill()
        launcher.wait(timeout=30)
        assert gone(workers, timeout=60), "the workers of the killed launcher are still training"
        assert (run / "resume.pt").is_file()
        assert [e["event"] for e in read_events(run / "events.jsonl")][-1] == "cancelled"
    finally:  # whatever failed above: nothing of this run may go on training
        for pid in [launcher.pid] + workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
