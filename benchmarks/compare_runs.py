"""Compare finished training runs side by side from their event logs (``RUN_DIR/events.jsonl``).

One row per run directory: method, precision (bf16 or fp32, from the ``started`` event), seed (``config.yaml``),
median seconds per iteration, mean training loss over the last ``--tail`` logged iterations, best and last
validation Dice, and whether the run finished. Then, per (method, precision), the mean and spread over the finished
runs; and, where the same method and seed finished in both precisions with the same iteration count, the paired
difference fp32 - bf16 of the best validation Dice (mean ± sd over seeds; the pairing removes the seed's share of the
spread, which at CPU scale is larger than any precision effect).

Usage::

    python benchmarks/compare_runs.py RUN_DIR [RUN_DIR ...] [--tail 100]
    python benchmarks/compare_runs.py runs/bench/amp_*_*/supervised runs/bench/amp_*_*/sassnet
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional


def _events(run: Path) -> List[Dict[str, Any]]:
    path = run / "events.jsonl"
    if not path.exists():
        raise SystemExit(f"{path}: no event log (not a run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _seed(run: Path) -> Optional[int]:
    for line in (run / "config.yaml").read_text().splitlines() if (run / "config.yaml").exists() else []:
        if line.startswith("seed:"):
            return int(line.split(":", 1)[1])
    return None


def summarise(run: Path, tail: int) -> Dict[str, Any]:
    events = _events(run)
    started = next((e for e in events if e.get("event") in ("started", "resumed")), {})
    finished = any(e.get("event") == "finished" for e in events)
    its = [e for e in events if e.get("event") == "iteration"]
    vals = [e for e in events if e.get("event") == "validation"]
    dices = [float(e["metrics"]["dice"]) for e in vals if (e.get("metrics") or {}).get("dice") is not None]
    last_its = [e for e in its if e["iteration"] > (its[-1]["iteration"] - tail if its else 0)]
    return {
        "run": str(run), "method": started.get("method"), "precision": "bf16" if started.get("bf16") else "fp32",
        "seed": _seed(run), "iterations": its[-1]["iteration"] if its else 0,
        "s_per_it": statistics.median(e["s_per_it"] for e in its) if its else float("nan"),
        "tail_loss": statistics.mean(e["loss"] for e in last_its) if last_its else float("nan"),
        "best_dice": max(dices) if dices else float("nan"), "last_dice": dices[-1] if dices else float("nan"),
        "finished": finished,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--tail", type=int, default=100, help="iterations at the end over which the loss is averaged")
    args = p.parse_args(argv)
    rows = [summarise(r, args.tail) for r in args.runs]
    rows.sort(key=lambda r: (str(r["method"]), r["precision"], r["seed"] or 0))
    print(f"| method | precision | seed | iterations | finished | s/it | mean loss, last {args.tail} it | "
          "best val Dice | last val Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['precision']} | {r['seed']} | {r['iterations']} | "
              f"{'yes' if r['finished'] else 'no'} | {r['s_per_it']:.3f} | "
              f"{r['tail_loss']:.4f} | {r['best_dice']:.4f} | {r['last_dice']:.4f} |")
    rows = [r for r in rows if r["finished"]]
    print("\n| method | precision | runs | s/it (median) | mean loss (mean ± sd) | best val Dice (mean ± sd) | "
          "last val Dice (mean ± sd) |")
    print("|---|---|---|---|---|---|---|")
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["precision"]), []).append(r)

    def ms(values: List[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    for (method, precision), group in groups.items():
        print(f"| {method} | {precision} | {len(group)} | {statistics.median(g['s_per_it'] for g in group):.3f} | "
              f"{ms([g['tail_loss'] for g in group])} | {ms([g['best_dice'] for g in group])} | "
              f"{ms([g['last_dice'] for g in group])} |")

    pairs: Dict[str, List[float]] = {}
    fp32 = {(r["method"], r["seed"], r["iterations"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:  # sorted by method, precision, seed
        other = fp32.get((r["method"], r["seed"], r["iterations"]))
        if r["precision"] == "bf16" and other is not None:
            pairs.setdefault(f"{r['method']} ({r['iterations']} it)", []).append(other["best_dice"] - r["best_dice"])
    if pairs:
        print("\n| method | seeds paired | best val Dice fp32 - bf16 (mean ± sd) | per seed |")
        print("|---|---|---|---|")
        for name, diffs in pairs.items():
            print(f"| {name} | {len(diffs)} | {ms(diffs)} | {', '.join(f'{d:+.4f}' for d in diffs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
