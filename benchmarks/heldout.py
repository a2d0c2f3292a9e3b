"""Held-out benchmark: train every (method, labeled count, augmentation, seed) with one budget, then segment a test
set that no run ever sees and score it — the table that says whether semi-supervision (or a recipe change) pays.

Splits (``benchmarks/splits/<dataset>.json``, written once by ``--make-split`` and committed, so every run and every
later run uses the same cases):

* ``test``: held-out cases, never read by training, validation or model selection (hippocampus: 40 of the 200,
  drawn with a fixed seed; LA: 16 of the 80, the last 16 of the release's training list);
* ``train``: the rest — the pool the labeled subsets and the unlabeled cases come from;
* ``labeled_N``: the first N of a fixed shuffle of the pool (nested: ``labeled_5`` is inside ``labeled_10``); for LA
  ``labeled_16`` is the papers' (the first 16 of the release's list). The unlabeled cases are the rest of ``train``.

Each run is a ``semisupseg train`` subprocess (``--validation 0``: no model selection, ``last.pt`` is scored), then
``semisupseg segment`` on the test images and ``semisupseg evaluate`` against their labels; a run's ``test.csv`` is
its result. Re-running the script skips finished runs and resumes interrupted ones (``--resume``), so a long grid
survives an interrupted machine. ``--parallel P`` runs P at a time (``--threads`` each).

The table: per group (method, labeled count, augmentation), mean ± std **over seeds** of the per-seed mean test Dice
(per class), the median over all test cases and seeds, HD95/ASD (mm); and, against ``--reference`` (default: the
group's ``supervised`` twin, or ``papers`` augmentation with ``--compare augment``), the paired per-case difference
in Dice (each test case x seed paired with the same case x seed of the reference) with a 95 % bootstrap interval and
a two-sided sign test.

Usage::

    python benchmarks/heldout.py --dataset hippocampus --make-split
    python benchmarks/heldout.py --dataset hippocampus --methods supervised --labeled 20 \\
        --augment papers dihedral none --seeds 1 2 3 --iterations 2000 --out-dir runs/heldout --parallel 2
    python benchmarks/heldout.py --dataset hippocampus ... --table-only     # just print the table
    python benchmarks/heldout.py --dataset hippocampus ... --keep-largest   # re-scored after the largest-component step

Run folders are named by method, labeled count, augmentation and seed only: runs that differ in a ``--set`` value
(``data.perturb=none`` against the default ``both``, ``model.n_filters``, ...) need an ``--out-dir`` each, or a
finished run of the other recipe would be taken for theirs.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATASETS = {
    # name: (data folder, default patch x y z, label values, class names)
    "hippocampus": (SHARED / "Task04_Hippocampus", (32, 48, 32), (1, 2), ("anterior", "posterior")),
    "la": (SHARED / "LA", (64, 64, 48), (1,), ("left atrium",)),
}
SPLIT_DIR = REPO / "benchmarks" / "splits"
# per-case scores of every finished run, committed: the tables can be rebuilt (and extended by later seeds) without
# the run folders, which are large and live on scratch space
ARCHIVE_DIR = REPO / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------------------ splits
def make_split(dataset: str, data_dir: Path) -> Dict[str, List[str]]:
    """The fixed held-out split of ``dataset`` (see the module docstring)."""
    if dataset == "la":
        train = json.loads((data_dir / "splits.json").read_text())["train"]
        test = train[-16:]
        pool = train[:-16]
        split = {"test": test, "train": pool, "labeled_16": pool[:16], "labeled_8": pool[:8]}
        order = pool
    else:
        ids = sorted(p.name[: -len(".nii.gz")] for p in (data_dir / "imagesTr").glob("*.nii.gz")
                     if not p.name.startswith("."))
        rng = np.random.default_rng(20261202)
        perm = [ids[i] for i in rng.permutation(len(ids))]
        test, pool = sorted(perm[:40]), perm[40:]
        split = {"test": test, "train": sorted(pool)}
        order = pool
    for n in (5, 10, 20, 50):
        split.setdefault(f"labeled_{n}", order[:n])
    split[f"labeled_{len(order)}"] = list(order)
    return split


def split_path(dataset: str) -> Path:
    return SPLIT_DIR / f"{dataset}.json"


# ------------------------------------------------------------------------------------------------------ runs
def run_name(method: str, labeled: int, augment: str, seed: int) -> str:
    return f"{method}_l{labeled}_{augment}_s{seed}"


def scores_suffix(keep_largest: bool) -> str:
    """The file-name suffix of the per-case scores: ``""`` for the raw network output, ``"_keep-largest"`` for the
    output after the largest-component step (``segment --keep-largest``)."""
    return "_keep-largest" if keep_largest else ""


def archive_path(out_dir: Path, dataset: str, name: str, keep_largest: bool = False) -> Path:
    """Where the per-case scores of run ``name`` are kept in the repository:
    ``benchmarks/results/<out-dir name>/<dataset>/<run name>[_keep-largest].csv``."""
    return ARCHIVE_DIR / Path(out_dir).name / dataset / f"{name}{scores_suffix(keep_largest)}.csv"


def scores_file(out_dir: Path, dataset: str, name: str, keep_largest: bool = False) -> Optional[Path]:
    """The run folder's ``test[_keep-largest].csv`` if it is there, else the archived copy, else ``None``."""
    run_csv = Path(out_dir) / dataset / name / f"test{scores_suffix(keep_largest)}.csv"
    if run_csv.exists():
        return run_csv
    archived = archive_path(out_dir, dataset, name, keep_largest)
    return archived if archived.exists() else None


def _finished(run_dir: Path) -> bool:
    """Whether the run's last session ended with ``finished`` (the engine's own reading of the run folder)."""
    from semisupseg.training.heartbeat import run_status

    return run_status(run_dir) == "finished"


def _resumable(run_dir: Path) -> bool:
    return (run_dir / "resume.pt").exists()


def _call(argv: List[str], log: Path, env: Dict[str, str]) -> int:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        return subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def do_run(args, dataset: str, data_dir: Path, method: str, labeled: int, augment: str, seed: int,
           split_file: Optional[Path] = None, labeled_key: Optional[str] = None,
           run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Train (or resume), segment the test set, evaluate; returns a status row.

    By default the labeled cases are ``labeled_<labeled>`` of the dataset's fixed split and the run lives in
    ``<out-dir>/<dataset>/<run name>``; other experiments (``active_learning.py``) pass their own split file (same
    ``test`` and ``train`` lists), labeled-list key and run folder."""
    split_file = split_file or split_path(dataset)
    labeled_key = labeled_key or f"labeled_{labeled}"
    run_dir = Path(run_dir) if run_dir else Path(args.out_dir) / dataset / run_name(method, labeled, augment, seed)
    name = run_dir.name
    keep_largest = getattr(args, "keep_largest", False)
    test_csv = run_dir / f"test{scores_suffix(keep_largest)}.csv"
    archived = archive_path(run_dir.parent.parent, dataset, name, keep_largest)
    official = Path(split_file) == split_path(dataset)
    if official and not test_csv.exists() and archived.exists():
        return {"run": name, "status": "scored earlier (archived)", "seconds": 0.0}
    if keep_largest and not _finished(run_dir) and not _resumable(run_dir):
        return {"run": name, "status": "no model to re-score (train it first, without --keep-largest)",
                "seconds": 0.0}
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "benchmark.log"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    py = [sys.executable, "-m", "semisupseg"]
    t0 = time.time()
    if not _finished(run_dir):
        if _resumable(run_dir):
            argv = py + ["train", "--resume", str(run_dir), "--no-bar", "--set", f"iterations={args.iterations}"]
        else:
            patch = args.patch_size or DATASETS[dataset][1]
            argv = py + ["train", "--method", method, "--labeled", str(data_dir), "--split", str(split_file),
                         "--split-labeled", labeled_key, "--validation", "0",
                         "--patch-size", *[str(v) for v in patch], "--iterations", str(args.iterations),
                         "--seed", str(seed), "--out", str(run_dir), "--no-bar", "--overwrite",
                         "--set", f"data.augment={augment}", "--set", f"num_threads={args.threads}",
                         "--set", f"save_every={args.save_every}"]
            for o in args.set:
                argv += ["--set", o]
        rc = _call(argv, log, env)
        if rc != 0 or not _finished(run_dir):
            return {"run": name, "status": f"train failed ({rc})", "seconds": time.time() - t0}
    if not test_csv.exists():
        split = json.loads(Path(split_file).read_text())
        images = [str(data_dir / "imagesTr" / f"{c}.nii.gz") for c in split["test"]]
        pred = run_dir / "test_pred"
        rc = _call(py + ["segment", *images, "--model", str(run_dir / "last.pt"), "-o", str(pred), "--overwrite",
                         "--keep-largest" if keep_largest else "--no-keep-largest"], log, env)
        if rc != 0:
            return {"run": name, "status": f"segment failed ({rc})", "seconds": time.time() - t0}
        labels = [str(v) for v in DATASETS[dataset][2]]
        rc = _call(py + ["evaluate", str(pred), str(data_dir / "labelsTr"), "--labels", *labels,
                         "-o", str(test_csv), "--overwrite", "--quiet"], log, env)
        if rc != 0:
            return {"run": name, "status": f"evaluate failed ({rc})", "seconds": time.time() - t0}
        # predictions are large and reproducible from last.pt: keep the scores only
        for f in pred.glob("*"):
            f.unlink()
        pred.rmdir()
    if official:
        archived.parent.mkdir(parents=True, exist_ok=True)
        archived.write_bytes(test_csv.read_bytes())
    return {"run": name, "status": "ok", "seconds": time.time() - t0}


# ------------------------------------------------------------------------------------------------------ table
def read_scores(path: Path) -> Dict[Tuple[str, int], Dict[str, float]]:
    """``{(case, label): {"dice":…, "hd95_mm":…, "asd_mm":…}}`` of a per-case score file (a run's ``test.csv``, or a
    run folder, meaning its ``test.csv``)."""
    path = Path(path)
    out = {}
    with open(path / "test.csv" if path.is_dir() else path) as fh:
        for row in csv.DictReader(fh):
            out[(row["case"], int(row["label"]))] = {k: float(row[k]) if row[k] not in ("", "nan") else math.nan
                                                     for k in ("dice", "hd95_mm", "asd_mm")}
    return out


def sign_test_p(diffs: Sequence[float]) -> float:
    """Two-sided exact sign test p-value of paired differences (zeros dropped). The counts are Python ints: numpy's
    would overflow ``2 ** n`` from n = 63 on (a negative or a 1.0 p-value)."""
    pos = int(sum(bool(d > 0) for d in diffs))
    neg = int(sum(bool(d < 0) for d in diffs))
    n = pos + neg
    if n == 0:
        return 1.0
    k = min(pos, neg)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def bootstrap_ci(diffs: Sequence[float], n: int = 10000, seed: int = 0) -> Tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``diffs``."""
    d = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def case_differences(by_seed: Dict[int, Dict], reference: Dict[int, Dict],
                     metric: str = "dice") -> Tuple[Dict[str, float], Dict[int, float]]:
    """Paired differences (run − reference) of ``metric``, with the **test case** as the unit: ``(per_case,
    per_seed)``. ``per_case``: for each case, the mean of its differences over its classes and the seeds both sides
    have; ``per_seed``: for each shared seed, the mean difference over its case-class pairs. ``by_seed`` and
    ``reference``: ``{seed: read_scores(...)}``. Pairs where either side is NaN are left out.

    The classes of one case and the same case under several seeds are not independent samples: pooling every
    (case, class, seed) difference into one test (as the tables did before 2026-12-05) made p-values and intervals
    too confident (n = 240 for 40 hippocampus cases)."""
    by_case: Dict[str, List[float]] = {}
    per_seed: Dict[int, float] = {}
    for seed, scores in by_seed.items():
        if seed not in reference:
            continue
        diffs = []
        for key, value in scores.items():
            other = reference[seed].get(key)
            if other is None or math.isnan(value[metric]) or math.isnan(other[metric]):
                continue
            diffs.append(value[metric] - other[metric])
            by_case.setdefault(key[0], []).append(diffs[-1])
        if diffs:
            per_seed[seed] = float(np.mean(diffs))
    return {case: float(np.mean(d)) for case, d in by_case.items()}, per_seed


def paired_comparison(by_seed: Dict[int, Dict], reference: Dict[int, Dict], metric: str = "dice") -> str:
    """``"+0.014 [+0.007, +0.021], p = 0.017 (40 cases); per seed +0.010, +0.020, +0.012"``: the mean per-case
    difference (:func:`case_differences`), its 95 % bootstrap interval resampling cases, the sign test over cases,
    and the mean difference of each seed (the spread from training randomness, which the interval does not hold).
    ``""`` when nothing pairs."""
    per_case, per_seed = case_differences(by_seed, reference, metric)
    if not per_case:
        return ""
    values = list(per_case.values())
    lo, hi = bootstrap_ci(values)
    seeds = ", ".join(f"{per_seed[s]:+.3f}" for s in sorted(per_seed))
    return (f"{np.mean(values):+.3f} [{lo:+.3f}, {hi:+.3f}], p = {sign_test_p(values):.2g} ({len(values)} cases)"
            + (f"; per seed {seeds}" if len(per_seed) > 1 else ""))


def finite_mean(values: Sequence[float]) -> str:
    """The mean of the finite ``values`` (``"2.41"``), with ``" (n 38/40)"`` when some are not finite (a distance
    on an empty prediction or reference): a method that predicts nothing on hard cases must not look better."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return "-"
    text = f"{v[finite].mean():.2f}"
    return text if finite.all() else f"{text} (n {int(finite.sum())}/{v.size})"


def table(args, dataset: str) -> str:
    labels = DATASETS[dataset][2]
    names = DATASETS[dataset][3]
    groups: Dict[Tuple[str, int, str], Dict[int, Dict]] = {}
    for method in args.methods:
        for n in args.labeled:
            for aug in args.augment:
                for seed in args.seeds:
                    found = scores_file(Path(args.out_dir), dataset, run_name(method, n, aug, seed),
                                        args.keep_largest)
                    if found is not None:
                        groups.setdefault((method, n, aug), {})[seed] = read_scores(found)
    lines = ["| method | labeled | augment | seeds | " + " | ".join(f"Dice {c} (mean ± sd over seeds)" for c in names)
             + " | median Dice | HD95 mm | ASD mm | Δ Dice vs reference, per test case [95 % CI], sign test p "
               "over cases; per seed |",
             "|" + "---|" * (8 + len(names))]
    for (method, n, aug), by_seed in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "supervised",
                                                                             kv[0][0], kv[0][2])):
        per_class = []
        for lab in labels:
            seed_means = [np.nanmean([v["dice"] for (c, l), v in s.items() if l == lab]) for s in by_seed.values()]
            sd = np.std(seed_means, ddof=1) if len(seed_means) > 1 else math.nan  # the sample sd (n - 1)
            per_class.append(f"{np.mean(seed_means):.3f} ± {sd:.3f}")
        all_dice = [v["dice"] for s in by_seed.values() for v in s.values()]
        hd = [v["hd95_mm"] for s in by_seed.values() for v in s.values()]
        asd = [v["asd_mm"] for s in by_seed.values() for v in s.values()]
        ref_key = (("supervised", n, aug) if args.compare == "method" else (method, n, args.reference_augment))
        comp = ""
        if ref_key != (method, n, aug) and ref_key in groups:
            comp = paired_comparison(by_seed, groups[ref_key])
        lines.append(f"| {method} | {n} | {aug} | {len(by_seed)} | " + " | ".join(per_class)
                     + f" | {np.nanmedian(all_dice):.3f} | {finite_mean(hd)} | {finite_mean(asd)} | {comp} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: the shared copy)")
    p.add_argument("--make-split", action="store_true", help="write benchmarks/splits/<dataset>.json and exit")
    p.add_argument("--methods", nargs="+", default=["supervised"])
    p.add_argument("--labeled", type=int, nargs="+", default=[20])
    p.add_argument("--augment", nargs="+", default=["none"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra train overrides")
    p.add_argument("--out-dir", default="runs/heldout")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--compare", choices=("method", "augment"), default="method",
                   help="reference of the paired differences: supervised (method) or --reference-augment")
    p.add_argument("--reference-augment", default="papers")
    p.add_argument("--keep-largest", action="store_true",
                   help="score the output after the largest-component step (the releases' test-time\n"
                        "post-processing): finished runs are only re-segmented; scores go to test_keep-largest.csv")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    data_dir = args.data or DATASETS[args.dataset][0]
    if args.make_split:
        path = split_path(args.dataset)
        if path.exists():
            print(f"{path} exists; not replaced (delete it to draw a new split)", file=sys.stderr)
            return 2
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(make_split(args.dataset, data_dir), indent=1) + "\n")
        print(path)
        return 0
    if not args.table_only:
        jobs = [(m, n, a, s) for s in args.seeds for m in args.methods for n in args.labeled for a in args.augment]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for row in pool.map(lambda j: do_run(args, args.dataset, data_dir, *j), jobs):
                print(f"{row['run']}: {row['status']} ({row['seconds']:.0f} s)", flush=True)
    print(table(args, args.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
