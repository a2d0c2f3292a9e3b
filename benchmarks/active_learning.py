"""Annotate next, measured: does labeling the scans ``semisupseg rank`` puts first beat labeling random ones?

The experiment (on the fixed held-out split of ``heldout.py``; LA by default):

1. A model trained on the initial labeled set ``L0`` (``labeled_16``: a ``heldout.py`` run, ``--model``) ranks the
   rest of the training pool ``U`` (48 LA scans) with ``semisupseg rank`` (default measure, ``boundary_entropy``).
   The selection reads only the ranking score; the pool's labels are read afterwards to report how the score
   correlates with the model's true error there (Spearman, printed by ``rank --labels``).
2. ``K`` scans are added to ``L0``: the ``K`` top-ranked (``top``), or ``K`` drawn at random from ``U``
   (``random``, one draw per seed: draw ``i`` uses ``numpy.random.default_rng(i)``).
3. Each labeled set trains the same recipe as the baseline (``supervised``, same iterations, patch, augmentation,
   ``--validation 0``: ``last.pt`` is scored), seeds 1..S; every run is scored on the ``test`` list no run sees.

The table: per condition, mean ± sd over seeds of the per-seed mean test Dice, the median over cases and seeds,
HD95/ASD; and ``top`` against ``random`` paired case by case and seed by seed (``top`` seed ``s`` with random draw
``s`` trained with seed ``s``) with a 95 % bootstrap interval and a sign test; the baseline ``L0`` runs of
``heldout.py`` (same seeds) are listed for scale. Re-running skips finished runs and resumes interrupted ones.

Usage::

    python benchmarks/active_learning.py --model runs/heldout/la/supervised_l16_none_s1/last.pt \\
        --add 8 --seeds 1 2 3 --iterations 1000 --out-dir runs/active
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402  (the benchmark's runs, scores and statistics)


def rank_pool(args, data_dir: Path, pool: List[str], out: Path) -> List[str]:
    """Rank ``pool`` with ``semisupseg rank`` (writes ``out/ranking.csv``); returns the case ids, least sure first."""
    csv_path = out / "ranking.csv"
    if not csv_path.exists():
        images = [str(data_dir / "imagesTr" / f"{c}.nii.gz") for c in pool]
        argv = [sys.executable, "-m", "semisupseg", "rank", "--model", str(args.model), *images, "-o", str(csv_path),
                "--measure", "all", "--labels", str(data_dir / "labelsTr")]
        with open(out / "ranking.log", "w") as fh:
            rc = subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=str(heldout.REPO))
        if rc != 0:
            raise SystemExit(f"semisupseg rank failed ({rc}); see {out / 'ranking.log'}")
    with open(csv_path) as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["rank"]))
    return [r["case"] for r in rows]


def make_split(base: Dict[str, List[str]], initial: str, ranked: List[str], k: int, seeds: List[int]) -> Dict:
    """The benchmark split plus one labeled list per condition: ``top_<k>`` and ``random_<k>_r<seed>``."""
    split = {key: base[key] for key in ("test", "train", initial)}
    split[f"top_{k}"] = base[initial] + ranked[:k]
    for s in seeds:
        rng = np.random.default_rng(s)
        split[f"random_{k}_r{s}"] = base[initial] + [ranked[i] for i in sorted(rng.choice(len(ranked), k, replace=False))]
    return split


def summary(name: str, by_seed: Dict[int, Dict], reference: Optional[Dict[int, Dict]] = None) -> str:
    seed_means = [np.nanmean([v["dice"] for v in s.values()]) for s in by_seed.values()]
    vals = [v for s in by_seed.values() for v in s.values()]
    comp = heldout.paired_comparison(by_seed, reference) if reference else ""
    sd = np.std(seed_means, ddof=1) if len(seed_means) > 1 else float("nan")  # the sample sd (n - 1)
    return (f"| {name} | {len(by_seed)} | {np.mean(seed_means):.3f} ± {sd:.3f} | "
            f"{np.nanmedian([v['dice'] for v in vals]):.3f} | {min(v['dice'] for v in vals):.3f} | "
            f"{heldout.finite_mean([v['hd95_mm'] for v in vals])} | {heldout.finite_mean([v['asd_mm'] for v in vals])} "
            f"| {comp} |")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(heldout.DATASETS), default="la")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--model", type=Path, required=True, help="model trained on --initial (ranks the pool)")
    p.add_argument("--initial", default="labeled_16", help="labeled list of the split the model was trained on")
    p.add_argument("--add", type=int, default=8, help="scans added to the labeled set")
    p.add_argument("--method", default="supervised")
    p.add_argument("--augment", default="none")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--patch-size", type=int, nargs=3, default=None)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--out-dir", type=Path, default=Path("runs/active"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--baseline-dir", type=Path, default=Path("runs/heldout"), help="heldout.py's --out-dir")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    args.set = []
    data_dir = args.data or heldout.DATASETS[args.dataset][0]
    out = args.out_dir / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    base = json.loads(heldout.split_path(args.dataset).read_text())
    pool = [c for c in base["train"] if c not in base[args.initial]]
    ranked = rank_pool(args, data_dir, pool, out)
    split_file = out / "split.json"
    split = make_split(base, args.initial, ranked, args.add, args.seeds)
    if split_file.exists() and json.loads(split_file.read_text()) != split:
        raise SystemExit(f"{split_file} holds another selection (other --model/--add/--seeds?); use another --out-dir")
    split_file.write_text(json.dumps(split, indent=1) + "\n")

    def run_dir(cond: str, seed: int) -> Path:
        return out / f"{args.method}_{cond}_{args.add}_{args.augment}_s{seed}"

    jobs = [(cond, s) for s in args.seeds for cond in ("top", "random")]
    if not args.table_only:
        def one(job):
            cond, s = job
            key = f"top_{args.add}" if cond == "top" else f"random_{args.add}_r{s}"
            return heldout.do_run(args, args.dataset, data_dir, args.method, len(split[key]), args.augment, s,
                                  split_file=split_file, labeled_key=key, run_dir=run_dir(cond, s))
        with ThreadPoolExecutor(max_workers=args.parallel) as ex:
            for row in ex.map(one, jobs):
                print(f"{row['run']}: {row['status']} ({row['seconds']:.0f} s)", flush=True)

    def scores(dirs: Dict[int, Path]) -> Dict[int, Dict]:
        # keyed by (case, label) as heldout.table does: a case alone kept only its last class on multi-class data
        return {s: heldout.read_scores(d) for s, d in dirs.items() if (d / "test.csv").exists()}

    n0 = len(base[args.initial])
    baseline = scores({s: args.baseline_dir / args.dataset / heldout.run_name(args.method, n0, args.augment, s)
                       for s in args.seeds})
    top = scores({s: run_dir("top", s) for s in args.seeds})
    rnd = scores({s: run_dir("random", s) for s in args.seeds})
    print(f"\n{args.dataset}: {n0} labeled + {args.add} chosen from a pool of {len(pool)}; {args.method}, "
          f"{args.iterations} it, augment {args.augment}; test = {len(base['test'])} held-out scans\n")
    print("| labeled set | seeds | test Dice (mean ± sd over seeds) | median | worst case | HD95 mm | ASD mm "
          "| Δ Dice vs random, per test case [95 % CI], sign test p over cases; per seed |")
    print("|---|---|---|---|---|---|---|---|")
    if baseline:
        print(summary(f"initial {n0}", baseline))
    if rnd:
        print(summary(f"+{args.add} random", rnd))
    if top:
        print(summary(f"+{args.add} top-ranked", top, rnd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
