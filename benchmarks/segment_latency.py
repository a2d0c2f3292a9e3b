"""What a click on *Segment* costs besides inference: a fresh ``semisupseg segment`` process vs the warm worker.

Measured side by side in one run, on one full-resolution LA scan (``mri_norm2.h5``, 0.625 mm), repeats interleaved
so that both paths see the same machine load; medians printed as a table. Every path ends with the outputs back in
memory as arrays (what the Slicer module puts in the scene), so the wall times compare like with like:

* ``fresh``: a ``python -m semisupseg segment --json-progress`` child through ``SemiSupSegLib.runner.ProcessRunner``
  (h5 in, ``.nii.gz`` out, read back with :func:`semisupseg.io.read_volume`); once with labels only, once with the
  outputs the module shows (labels, SDM, entropy);
* ``worker cold``: start ``semisupseg worker`` (``WorkerClient``), then its first request (model load and the
  first forward pass's one-off set-up included) — once per repeat, in a new worker each time;
* ``worker warm``: the following requests to a running worker, with the image given as the h5 file, as an
  uncompressed NRRD written by the client, or as a raw ``.npy`` + geometry written by the client (the module's
  path: the volume is already in memory); outputs as ``.npy``, loaded back.

``inference`` is :func:`semisupseg.inference.segment`'s own time (reported by the child); ``overhead`` = wall -
inference. Model: V-Net n_filters 16 with the LA defaults (0.625 mm, window 112x112x80), untrained (timing only),
or ``--model``. torch threads: the default of each process (same for both paths).

Usage::

    python benchmarks/segment_latency.py [--case ../shared/data/LA/h5/<ID>/mri_norm2.h5] [--model MODEL.pt]
        [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "SemiSupSeg"))
DEFAULT_H5 = REPO.parent / "shared" / "data" / "LA" / "h5"
SHOWN = ["labels", "sdm", "entropy"]  # what the Slicer module puts in the scene


def make_model(folder: Path) -> Path:
    import torch

    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.nets import VNet, VNetConfig

    torch.manual_seed(0)
    model = VNet(VNetConfig(n_filters=16, num_classes=2, sdm_head=True)).eval()
    card = make_card(model, method="random-weights", spacing_xyz=(0.625,) * 3, patch_size_xyz=(112, 112, 80),
                     class_names=["background", "left atrium"])
    return save_model(folder / "la_n16.pt", model, card)


def fresh(case: Path, model: Path, out: Path, outputs: List[str], env: Dict[str, str]) -> Dict[str, float]:
    from SemiSupSegLib.runner import ProcessRunner

    from semisupseg.io import read_volume

    flags = {"sdm": "--sdm", "entropy": "--entropy", "probabilities": "--prob"}
    args = ["segment", str(case), "--model", str(model), "-o", str(out), "--json-progress"]
    args += [flags[o] for o in outputs if o in flags]
    done: Dict = {}
    t0 = time.perf_counter()
    runner = ProcessRunner(args, on_event=lambda e: done.update(e) if e["event"] == "done" else None,
                           env=env).start()
    if runner.wait() != 0:
        raise SystemExit(f"segment failed: {runner.error}")
    arrays = {k: read_volume(v, allow_channels=True).array for k, v in done["outputs"].items()}
    wall = time.perf_counter() - t0
    assert set(arrays) == set(["labels"] + [o for o in outputs if o != "labels"])
    return {"wall": wall, "inference": float(done["seconds"]), "precision": done["precision"]}


def worker_request(client, image, model: Path, outputs: List[str]) -> Dict[str, float]:
    t0 = time.perf_counter()
    request = client.segment(image, model, outputs=outputs)
    result = request.wait()
    arrays = {k: v.array for k, v in request.volumes().items()}
    wall = time.perf_counter() - t0
    request.cleanup()
    assert set(arrays) == set(outputs)
    return {"wall": wall, "inference": float(result["info"]["total_seconds"]),
            "precision": result["info"]["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=None, help="LA mri_norm2.h5 (default: the first shared one)")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: untrained LA-default V-Net)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of every child (fresh processes and workers); default: torch's own choice")
    args = ap.parse_args()
    case = args.case or next(iter(sorted(DEFAULT_H5.glob("*/mri_norm2.h5"))), None)
    if case is None or not Path(case).exists():
        raise SystemExit(f"no LA case found (looked in {DEFAULT_H5}); pass --case")

    from SemiSupSegLib.runner import WorkerClient

    from semisupseg.io import read_image_or_h5, write_volume

    tmp = Path(tempfile.mkdtemp(prefix="segment-latency-"))
    model = args.model or make_model(tmp)
    image = read_image_or_h5(case)
    rows: Dict[str, List[Dict[str, float]]] = {}

    def add(name: str, m: Dict[str, float]) -> None:
        rows.setdefault(name, []).append(m)
        print(f"  {name:<48} wall {m['wall']:6.2f} s  inference {m['inference']:6.2f} s  {m['precision']}",
              flush=True)

    print(f"case {case} shape (z,y,x) {image.shape_zyx}; model {model.name}; {args.repeats} repeats; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; threads {args.threads or 'default'}; "
          f"Python {platform.python_version()}", flush=True)
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    warm = WorkerClient(env=env, threads=args.threads)
    try:
        t = time.perf_counter()
        warm.start()
        print(f"  (worker start: {time.perf_counter() - t:.2f} s)")
        worker_request(warm, case, model, SHOWN)  # its cold request; the loop below measures warm ones
        for r in range(args.repeats):
            add("fresh process, labels (.nii.gz)", fresh(case, model, tmp / f"f1_{r}", ["labels"], env))
            add("fresh process, labels+SDM+entropy (.nii.gz)", fresh(case, model, tmp / f"f3_{r}", SHOWN, env))
            cold = WorkerClient(env=env, threads=args.threads)
            try:
                t0 = time.perf_counter()
                cold.start()
                started = time.perf_counter() - t0
                m = worker_request(cold, case, model, SHOWN)
                m["wall"] += started
                add("worker cold: start + first request (h5)", m)
            finally:
                cold.close()
            add("worker warm, h5 file in", worker_request(warm, case, model, SHOWN))
            nrrd = tmp / f"in_{r}.nrrd"
            t0 = time.perf_counter()
            write_volume(image, nrrd, compress=False)
            m = worker_request(warm, nrrd, model, SHOWN)
            m["wall"] = time.perf_counter() - t0  # the NRRD write counts
            add("worker warm, NRRD written + read", m)
            add("worker warm, in-memory volume (.npy + geometry)", worker_request(warm, image, model, SHOWN))
    finally:
        warm.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print("| path | wall (median) | inference (median) | overhead = wall - inference |")
    print("|---|---:|---:|---:|")
    for name, ms in rows.items():
        wall = statistics.median(m["wall"] for m in ms)
        inf = statistics.median(m["inference"] for m in ms)
        over = statistics.median(m["wall"] - m["inference"] for m in ms)
        print(f"| {name} | {wall:.2f} s | {inf:.2f} s | {over:.2f} s |")


if __name__ == "__main__":
    main()
