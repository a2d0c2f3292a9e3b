"""Accuracy per CPU-hour: held-out Dice of one training run's checkpoints against the training time it took to reach
them — how far a user gets on this machine in a given wall-clock budget.

Input: a run folder of ``heldout.py`` (``--validation 0``) with copies of its checkpoint kept at a few iterations
(``RUN/kept/it<N>.pt``; ``train --set keep_every=N`` keeps them). Each kept checkpoint segments the dataset's
held-out ``test`` split (``benchmarks/splits/<dataset>.json``) and is scored like the benchmark (``test_it<N>.csv``
in the run folder, reused when present). Training time at iteration N is read from the run's ``events.jsonl``: the
sum of the gaps between consecutive ``iteration`` events (a resume's downtime and the validation/saving pauses
longer than ``--max-gap`` seconds are left out), so it is the time the training loop itself ran. The time depends on
what else ran on the machine; the table says the run's median s/it so it can be read against a quiet machine's.

Usage::

    python benchmarks/cpu_hour_curve.py runs/ship/la/sassnet_l16_none_s1 --dataset la
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402  (splits, datasets, per-case scores)


def training_seconds(events: Path, max_gap: float = 60.0) -> Tuple[Dict[int, float], float]:
    """``{iteration: seconds of training up to it}`` from an event log, and the median seconds per iteration."""
    times: List[Tuple[int, float]] = []
    for line in events.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed writer
        if e.get("event") == "iteration":
            times.append((int(e["iteration"]), float(e["time"])))
    out, total, gaps = {}, 0.0, []
    for (i0, t0), (i1, t1) in zip(times, times[1:]):
        if i1 <= i0:
            continue  # a resumed run repeats iterations after its last saved state
        step = (t1 - t0) / (i1 - i0)
        if step <= max_gap:
            total += t1 - t0
            gaps.append(step)
        out[i1] = total
    return out, float(np.median(gaps)) if gaps else float("nan")


def score(run: Path, checkpoint: Path, dataset: str, data_dir: Path) -> Path:
    """Segment the test split with ``checkpoint`` and score it; returns the per-case CSV (kept in the run folder)."""
    it = re.search(r"it(\d+)", checkpoint.stem).group(1)
    out_csv = run / f"test_it{int(it)}.csv"
    if out_csv.exists():
        return out_csv
    split = json.loads(heldout.split_path(dataset).read_text())
    pred = run / f"test_pred_it{int(it)}"
    py = [sys.executable, "-m", "semisupseg"]
    images = [str(data_dir / "imagesTr" / f"{c}.nii.gz") for c in split["test"]]
    with open(run / "curve.log", "a") as log:
        for argv in (py + ["segment", *images, "--model", str(checkpoint), "-o", str(pred), "--overwrite"],
                     py + ["evaluate", str(pred), str(data_dir / "labelsTr"), "--labels",
                           *map(str, heldout.DATASETS[dataset][2]), "-o", str(out_csv), "--overwrite", "--quiet"]):
            if subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(heldout.REPO)) != 0:
                raise SystemExit(f"{argv[3]} failed for {checkpoint}; see {run / 'curve.log'}")
    for f in pred.glob("*"):
        f.unlink()
    pred.rmdir()
    return out_csv


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--dataset", choices=sorted(heldout.DATASETS), required=True)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--max-gap", type=float, default=60.0, help="seconds per iteration above which a gap is downtime")
    args = p.parse_args(argv)
    data_dir = args.data or heldout.DATASETS[args.dataset][0]
    kept = sorted((args.run / "kept").glob("it*.pt"), key=lambda f: int(re.search(r"\d+", f.stem).group()))
    if not kept:
        p.error(f"{args.run / 'kept'}: no kept checkpoints (it<N>.pt)")
    seconds, s_per_it = training_seconds(args.run / "events.jsonl", args.max_gap)
    print(f"run {args.run.name}: median {s_per_it:.2f} s/it over the logged iterations\n")
    print("| iterations | training time (h) | test Dice (mean over classes and cases) | median | min | HD95 mm |")
    print("|---|---|---|---|---|---|")
    for ck in kept:
        it = int(re.search(r"\d+", ck.stem).group())
        rows = heldout.read_scores(score(args.run, ck, args.dataset, data_dir))
        dice = [v["dice"] for v in rows.values()]
        hd = [v["hd95_mm"] for v in rows.values()]
        hours = seconds.get(it, float("nan")) / 3600
        print(f"| {it} | {hours:.2f} | {np.nanmean(dice):.3f} | {np.nanmedian(dice):.3f} | {np.nanmin(dice):.3f} "
              f"| {np.nanmean(hd):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
