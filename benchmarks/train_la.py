"""CPU-scale training benchmark on the left-atrium data (../shared/data/LA, 1.25 mm): any list of methods, one fixed
iteration budget, one table.

Setting (the papers' protocol scaled to a CPU): the ``labeled_16`` split labeled, the other 64 training cases
unlabeled minus ``--validation`` of them held out for model selection (their labels are used only for validation),
patch 64 x 64 x 48 voxels (x, y, z), batch 2 labeled + 2 unlabeled (``supervised`` uses the 2 labeled only), V-Net
with ``n_filters`` 16, SGD 0.01 / momentum 0.9 / wd 1e-4, step decay x0.1 every 2500 iterations, validation by
sliding windows every ``--val-every`` iterations (Dice, HD95 in mm).

Each method runs in its own ``semisupseg train`` subprocess (so a crash or a memory blow-up of one method cannot
take the others down, and ``ru_maxrss`` is that run's own peak); its row is appended to ``--results`` (JSON) as soon
as it finishes. Re-running the script skips methods already finished, resumes interrupted ones (``--resume``) and
``--fresh`` starts them again. The table (markdown, for ``benchmarks/RESULTS.md``) is printed and written to
``--markdown``.

Usage::

    python benchmarks/train_la.py --methods supervised mean-teacher --iterations 2000 --val-every 500 \\
        --out-dir runs/train_la [--threads 2] [--validation 4] [--set optim.schedule=poly ...]
    python benchmarks/train_la.py --methods supervised --iterations 20 --val-every 20 --out-dir runs/smoke  # smoke
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_LA = REPO.parent / "shared" / "data" / "LA"


def _events(path: Path) -> List[Dict[str, Any]]:
    from semisupseg.training.events import read_events

    return read_events(path) if path.exists() else []


def _atomic_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=str(path.parent))
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def _summarise(method: str, run_dir: Path, returncode: Optional[int], wall_s: float, load: List[float],
               stderr_tail: str) -> Dict[str, Any]:
    """One result row from the run's events (the child's own numbers: timing excludes validation)."""
    events = _events(run_dir / "events.jsonl")
    finished = [e for e in events if e["event"] == "finished"]
    failed = [e for e in events if e["event"] == "failed"]
    vals = [e for e in events if e["event"] == "validation"]
    its = [e for e in events if e["event"] == "iteration"]
    row: Dict[str, Any] = {"method": method, "run_dir": str(run_dir), "returncode": returncode,
                           "wall_s": round(wall_s, 1), "loadavg_start_end": load}
    if finished:
        f = finished[-1]
        row.update(status="finished", iterations=f["iteration"], s_per_it_median=f.get("s_per_it_median"),
                   peak_rss_mb=f.get("peak_rss_mb"), best_val_dice=f.get("best_val_dice"),
                   best_iteration=f.get("best_iteration"))
    else:
        row.update(status="failed" if failed or returncode not in (0, None) else "incomplete",
                   iterations=its[-1]["iteration"] if its else 0,
                   message=(failed[-1]["message"] if failed else stderr_tail)[-800:])
    if vals:
        best = max(vals, key=lambda e: e["metrics"]["dice"] if e["metrics"]["dice"] is not None else -1)
        row["best_val_dice"] = best["metrics"]["dice"]
        row["best_val_hd95"] = best["metrics"]["hd95"]
        row["best_iteration"] = best["iteration"]
        row["last_val_dice"] = vals[-1]["metrics"]["dice"]
        row["validation_cases"] = [c["case"] for c in best["metrics"].get("cases", [])]
    if its:
        row["final_loss"] = its[-1]["loss"]
        row["final_losses"] = its[-1].get("losses")
        if row.get("s_per_it_median") is None:
            import statistics

            row["s_per_it_median"] = statistics.median(e["s_per_it"] for e in its if e.get("s_per_it"))
    return row


def run_method(method: str, args: argparse.Namespace) -> Dict[str, Any]:
    run_dir = Path(args.out_dir) / method
    cmd = [sys.executable, "-m", "semisupseg", "train", "--no-bar", "--method", method,
           "--labeled", str(args.la), "--split-labeled", args.split_labeled, "--validation", str(args.validation),
           "--iterations", str(args.iterations), "--patch-size", *[str(v) for v in args.patch],
           "--batch-size", str(args.batch_size), "--labeled-batch-size", str(args.labeled_batch_size),
           "--device", args.device, "--amp", args.amp, "--seed", str(args.seed),
           "--set", f"model.n_filters={args.n_filters}", "--set", f"val_every={args.val_every}",
           "--set", f"save_every={args.save_every}", "--set", f"log_every={args.log_every}",
           "--set", f"num_threads={args.threads}"]
    for s in args.set:
        cmd += ["--set", s]
    if run_dir.exists() and any(run_dir.iterdir()):
        if args.fresh:
            cmd += ["--out", str(run_dir), "--overwrite"]
        elif (run_dir / "config.yaml").exists():
            from semisupseg.training.heartbeat import run_state

            state = run_state(run_dir)
            if state.status == "finished" and (state.iteration or 0) >= args.iterations:  # nothing left to train
                load = round(os.getloadavg()[0], 2)
                return _summarise(method, run_dir, 0, 0.0, [load, load], "")
            cmd = [sys.executable, "-m", "semisupseg", "train", "--no-bar", "--resume", str(run_dir),
                   "--iterations", str(args.iterations), "--set", f"val_every={args.val_every}"]
        else:
            cmd += ["--out", str(run_dir), "--overwrite"]
    else:
        cmd += ["--out", str(run_dir)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads))
    load0 = [round(v, 2) for v in os.getloadavg()]
    print(f"[{dt.datetime.now():%H:%M:%S}] {method}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        rc, tail = proc.returncode, (proc.stderr or "")[-2000:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = None, f"timeout after {args.timeout} s; {(exc.stderr or b'')[-1000:]!r}"
    load1 = [round(v, 2) for v in os.getloadavg()]
    return _summarise(method, run_dir, rc, time.perf_counter() - t0, [load0[0], load1[0]], tail)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def markdown(results: Dict[str, Any]) -> str:
    s = results["setting"]
    lines = [
        f"### Training on LA (CPU scale) — {s['date']}",
        "",
        f"Data: `{s['la']}` (1.25 mm), labeled `{s['split_labeled']}`, the rest of `train` unlabeled minus "
        f"{s['validation']} held out for validation; patch {' x '.join(map(str, s['patch']))} (x, y, z), batch "
        f"{s['labeled_batch_size']} labeled + {s['batch_size'] - s['labeled_batch_size']} unlabeled, V-Net "
        f"n_filters {s['n_filters']}, {s['iterations']} iterations, validation every {s['val_every']}, seed "
        f"{s['seed']}, amp {s['amp']}. Machine: {s['machine']}, torch {s['torch']}, {s['threads']} thread(s). "
        f"Commit {s['commit']}. Extra settings: {', '.join(s['set']) or 'none'}.",
        "",
        "| method | status | iterations | s/it (median) | it/s | peak RSS (MiB) | best val Dice | HD95 (mm) at best "
        "| best at it. | load avg (start→end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["runs"]:
        spi = row.get("s_per_it_median")
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            row["method"], row["status"], row.get("iterations", "–"), _fmt(spi, ".3f"),
            _fmt(1.0 / spi if spi else None, ".2f"), _fmt(row.get("peak_rss_mb"), ".0f"),
            _fmt(row.get("best_val_dice"), ".4f"), _fmt(row.get("best_val_hd95"), ".2f"),
            row.get("best_iteration", "–"), "→".join(str(v) for v in row.get("loadavg_start_end", []))))
    failed = [r for r in results["runs"] if r["status"] != "finished"]
    for r in failed:
        lines.append(f"\n`{r['method']}` {r['status']}: {r.get('message', '').strip().splitlines()[-1:] or ''}")
    lines.append("\nTiming is the training step only (median over iterations; validation excluded); peak RSS is the "
                 "training process's `ru_maxrss`. The machine was shared: compare ratios within one table.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["supervised", "mean-teacher"])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--validation", type=int, default=4, help="cases of the unlabeled pool held out for validation")
    p.add_argument("--la", type=Path, default=DEFAULT_LA)
    p.add_argument("--split-labeled", default="labeled_16")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 48], metavar=("X", "Y", "Z"))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--labeled-batch-size", type=int, default=2)
    p.add_argument("--n-filters", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--timeout", type=float, default=None, help="seconds per method")
    p.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()) / "semisupseg_train_la")
    p.add_argument("--results", type=Path, default=None, help="JSON results (default OUT_DIR/results.json)")
    p.add_argument("--markdown", type=Path, default=None, help="table (default OUT_DIR/results.md)")
    p.add_argument("--fresh", action="store_true", help="start every method again (ignore earlier runs)")
    args = p.parse_args(argv)
    if not (args.la / "splits.json").exists():
        print(f"LA data not found at {args.la}", file=sys.stderr)
        return 2
    results_path = args.results or args.out_dir / "results.json"
    md_path = args.markdown or args.out_dir / "results.md"
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    setting = {"date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "la": str(args.la),
               "split_labeled": args.split_labeled, "validation": args.validation, "patch": args.patch,
               "batch_size": args.batch_size, "labeled_batch_size": args.labeled_batch_size,
               "n_filters": args.n_filters, "iterations": args.iterations, "val_every": args.val_every,
               "seed": args.seed, "amp": args.amp, "threads": args.threads, "set": args.set, "commit": commit,
               "torch": torch.__version__, "machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} CPUs"}
    results: Dict[str, Any] = {"setting": setting, "runs": []}
    if results_path.exists() and not args.fresh:
        old = json.loads(results_path.read_text())
        results["runs"] = [r for r in old.get("runs", []) if r["method"] in args.methods]
    for method in args.methods:
        done = [r for r in results["runs"] if r["method"] == method and r["status"] == "finished"
                and r.get("iterations") == args.iterations]
        if done and not args.fresh:
            print(f"{method}: already finished ({done[0]['run_dir']})")
            continue
        row = run_method(method, args)
        results["runs"] = [r for r in results["runs"] if r["method"] != method] + [row]
        _atomic_json(results, results_path)
        print(f"  -> {row['status']}, s/it {_fmt(row.get('s_per_it_median'), '.3f')}, best Dice "
              f"{_fmt(row.get('best_val_dice'), '.4f')}", flush=True)
    table = markdown(results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(table)
    print(table)
    return 0 if all(r["status"] == "finished" for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
