"""``semisupseg demo``: the whole workflow on the bundled sample scans, on this machine, with no download.

It runs, and prints, the same commands a user would type, on the bundled sample dataset (``semisupseg/sample_data``:
real MSD hippocampus or LA scans, provenance in its README). The test scans are the split's ``val`` list: they take
no part in training nor in model selection.

1. The shipped model for this dataset (``semisupseg models``: a shipped model whose classes are the dataset's), when
   there is one: ``semisupseg segment`` the test scans (labels, SDM, entropy), ``semisupseg evaluate`` them against
   their reference labels, ``semisupseg preview`` one picture per scan. Without such a model this part is skipped
   with a note.
2. ``semisupseg train`` a semi-supervised method (``--method``, default ``mean-teacher``) on the sample's few
   labeled cases and its unlabeled pool; when the pool has two cases or more, one of them is held out (with its
   label) to pick the best checkpoint, otherwise the last model is used. Then segment, evaluate and preview as in 1.
3. The same for ``--compare-with`` (default ``supervised``: the labeled cases only): same labeled cases, budget,
   seed, network and validation case.
4. The comparison table (per test case and mean: Dice and HD95 per class) is printed and written to
   ``DIR/comparison.md`` and ``DIR/comparison.csv``.

Layout of ``DIR``: one folder per model (``shipped-<name>/``, ``<method>/``, ``<compare-with>/``) holding
``segmentations/`` (``<case>_label``, ``_sdm``, ``_entropy``), ``metrics.csv`` (every ``evaluate`` metric) and
``previews/<case>.png``; the trained ones also ``run/`` (the model used and the run's record: config, events; not
what only a continued training needs) and ``train.log``. A model without an SDM head writes, as ``<case>_sdm``, the
signed distance map of its predicted segmentation (``segment --sdm`` does that), said so in the picture's title.

The defaults are sized for a laptop CPU (a few minutes); ``--iterations`` trades time for accuracy. Training and
segmentation use one CPU thread unless ``--threads`` says otherwise: on a 2-core machine that is busy with other
work, two threads made the default demo many times slower (they spin waiting for each other). The two trainings run
at the same time, each in its own ``semisupseg train`` process (``<method>/train.log`` keeps its output; its
progress lines are printed with the method's name in front), when the machine has ``--threads`` cores for each — the
wall clock is then the longer training's, not their sum; ``--one-at-a-time`` runs them one after the other. At this
budget the numbers say what a short run on two labeled scans gives, not what the methods reach on a real dataset
(see ``benchmarks/RESULTS.md`` for that).

The releases' recipes are written for 6000 iterations; in the demo's few hundred they hide what the demo is about.
Their consistency ramp leaves the unlabeled term at a negligible weight (about 1 % of the full one at iteration 300, so
mean-teacher was supervised training with extra cost), and the dropout V-Net of mean-teacher, DTC and SASSNet learnt
far slower than supervised's (mean-teacher at width 12: Dice 0 on the validation scan after 200
iterations, supervised 0.86). So every method of the demo trains the same V-Net without dropout, with 2 labeled + 1
unlabeled patch per step (the unlabeled pool is a single scan) and, where it has one, its unlabeled term ramped over
the run (``--set 'model.extra={dropout: false}' --set batch_size=3 --set method_params.rampup_period=0``, shown in the
printed commands; ``semisupseg train`` without them is the releases' recipe). The summary at the end lists the
folders, the table files and the time each part took.

``DIR/demo-files.json`` lists every file the demo wrote. With ``--overwrite`` the files of the earlier demo that
this one did not write again (another ``--method``, an older layout) are removed — only files listed there, never
anything else — and files in ``DIR`` that no demo wrote are named at the end and left as they are.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

#: per sample dataset: split list of labeled cases, patch size (x, y, z), network width, default iterations
PRESETS = {
    "hippocampus": {"split_labeled": "labeled_2", "patch_size": [32, 32, 32], "n_filters": 16, "iterations": 200,
                    "val_every": 100},
    "la": {"split_labeled": "labeled_2", "patch_size": [64, 64, 32], "n_filters": 16, "iterations": 300,
           "val_every": 100},
}

#: the demo's short-budget recipe, for every method (``train --set``): one V-Net for all (no dropout: the
#: releases' channel dropout made mean-teacher learn several times slower than supervised in a few hundred
#: iterations), 2 labeled + 1 unlabeled patch per step (the unlabeled pool is one or two scans)
SHORT_BUDGET_SETS = ("model.extra={dropout: false}", "batch_size=3")
#: ... and for the methods that ramp an unlabeled term: the ramp scaled to the run (the releases' ramp is written
#: for 6000 iterations: at 300 its weight is about 1 % of the full one, so the unlabeled scans would not act)
SCALED_RAMP_SET = "method_params.rampup_period=0"

#: files of the comparison table in the output folder
COMPARISON_MD, COMPARISON_CSV = "comparison.md", "comparison.csv"
COMPARISON_COLUMNS = ("model", "method", "case", "class", "label", "dice", "hd95_mm", "hd95_cases")
#: the list of files a demo wrote, in the output folder (relative POSIX paths)
MANIFEST = "demo-files.json"


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("demo", help="segment with the shipped model, train a semi-supervised method and "
                                           "supervised, compare them on held-out sample scans (no download)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="hippocampus", help="bundled sample dataset")
    p.add_argument("--method", default="mean-teacher", help="semi-supervised method to train (see 'semisupseg "
                                                             "methods'; default: %(default)s)")
    p.add_argument("--compare-with", default="supervised", metavar="METHOD",
                   help="second method trained the same way for the comparison; 'none' skips it "
                        "(default: %(default)s)")
    p.add_argument("--no-shipped", action="store_true", help="skip the shipped model's segmentation")
    p.add_argument("--iterations", type=int, help="training iterations of each method (default: the dataset preset)")
    p.add_argument("--width", type=int, metavar="N", help="network width, filters of the first level (default: the "
                                                          "dataset preset)")
    p.add_argument("--out", default="semisupseg-demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads of training and segmentation (default: %(default)s; more threads are faster "
                        "on an idle machine but many times slower on a busy one, where they wait for each other)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="train the two methods one after the other (default: at the same time, one process each, "
                        "when the machine has --threads cores for each)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo in --out")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ steps and timing
@dataclass
class Timer:
    """Wall-clock and CPU seconds (of this process or its children, all threads) per part of the demo, in the
    order first seen."""

    wall: Dict[str, float] = field(default_factory=dict)
    cpu: Dict[str, float] = field(default_factory=dict)

    def add(self, part: str, wall: float, cpu: float) -> None:
        self.wall[part] = self.wall.get(part, 0.0) + wall
        self.cpu[part] = self.cpu.get(part, 0.0) + cpu

    def lines(self) -> List[str]:
        width = max((len(p) for p in self.wall), default=0)
        out = [f"  {p:<{width}}  {_duration(w)} (CPU {_duration(self.cpu[p])})" for p, w in self.wall.items()]
        out.append(f"  {'total':<{width}}  {_duration(sum(self.wall.values()))} "
                   f"(CPU {_duration(sum(self.cpu.values()))})")
        return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _print_command(title: str, argv: List[str]) -> None:
    """The demo's heading of a step and the ``semisupseg`` command it runs, on stderr."""
    print(f"\n== {title}\n$ semisupseg {' '.join(shlex.quote(a) for a in argv)}", file=sys.stderr, flush=True)


def _run_step(title: str, argv: List[str], timer: Timer, part: str) -> None:
    from semisupseg.cli import main
    from semisupseg.errors import SemiSupSegError

    _print_command(title, argv)
    wall, cpu = time.perf_counter(), time.process_time()
    code = main(argv)
    timer.add(part, time.perf_counter() - wall, time.process_time() - cpu)
    if code != 0:
        raise SemiSupSegError(f"demo step '{title}' failed (exit code {code})")


def _note(text: str) -> None:
    print(f"\n-- {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the shipped model
def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def fitting_shipped_models(classes: Dict[int, str], in_channels: int = 1) -> Tuple[list, List[str]]:
    """Shipped models (catalogue entries) that fit a dataset: same foreground classes (label values and names,
    compared without case, ``_``/``-``/space alike) and input channels. Returns ``(entries, notes)``, the notes
    saying why a shipped model does not fit."""
    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.errors import InputError

    try:
        entries = [e for e in ModelCatalogue().entries() if e.source == "shipped"]
    except InputError as exc:  # an unreadable user registry must not stop the demo
        return [], [f"the model catalogue cannot be read ({exc}); no shipped model used"]
    fits, notes = [], []
    want = {v: _norm(n) for v, n in classes.items() if v != 0}
    for e in entries:
        if e.error or e.card is None:
            notes.append(f"shipped model '{e.name}' cannot be used: {e.error}")
            continue
        have = {int(v): _norm(n) for n, v in zip(e.card.class_names, e.card.label_values) if int(v) != 0}
        if have == want and int(e.card.in_channels) == in_channels:
            fits.append(e)
        else:
            notes.append(f"shipped model '{e.name}' ({', '.join(have.values())}) does not segment this dataset's "
                         f"classes ({', '.join(want.values())})")
    return fits, notes


def shipped_data_roles(card, case_ids: Sequence[str]) -> Dict[str, str]:
    """What a shipped model's training did with each case, from its card's split record (``training.data``:
    ``split_file`` relative to the source tree, ``labeled_list``, ``train_list`` (the list its labeled and unlabeled
    cases came from, training's ``data.split_all``; default ``train``), ``test_list``): ``labeled`` (trained on its
    label), ``unlabeled`` (its image was in the unlabeled pool, its label never read), ``test`` (its held-out test
    list), ``unused``; ``unknown`` when the card or the split file does not say (e.g. an installed package without
    the benchmark splits)."""
    import semisupseg

    data = (card.training or {}).get("data") or {}
    split_file, labeled_key = data.get("split_file"), data.get("labeled_list")
    unknown = {c: "unknown" for c in case_ids}
    if not split_file or not labeled_key:
        return unknown
    tree = Path(semisupseg.__file__).resolve().parents[2]  # the source tree: <tree>/src/semisupseg/__init__.py
    try:
        split = json.loads((tree / split_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return unknown
    labeled = set(split.get(labeled_key) or [])
    train = set(split.get(data.get("train_list") or "train") or []) | labeled
    test = set(split.get(data.get("test_list") or "test") or [])
    return {c: "labeled" if c in labeled else "unlabeled" if c in train else "test" if c in test else "unused"
            for c in case_ids}


# ------------------------------------------------------------------------------------------------ one model's results
@dataclass
class ModelResult:
    """One model's part of the demo: its display name, method, folder and model file."""

    name: str
    method: str
    folder: Path
    model: Path
    pictures: List[Path] = field(default_factory=list)

    @property
    def seg_dir(self) -> Path:
        return self.folder / "segmentations"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.csv"


def segment_score_picture(result: ModelResult, part: str, root: Path, test_ids: List[str], images: List[str],
                          classes: Dict[int, str], args: argparse.Namespace, timer: Timer) -> None:
    """``segment`` the test scans with ``result.model``, ``evaluate`` them, ``preview`` one picture per scan."""
    from semisupseg.checkpoint import read_card

    over = ["--overwrite"] if args.overwrite else []
    has_sdm = bool(read_card(result.model).network.get("sdm_head"))
    segment = ["segment", *images, "--model", str(result.model), "-o", str(result.seg_dir), "--entropy", "--sdm",
               "--device", args.device, *over]
    _run_step(f"{result.name}: segment the test scans", segment,
              timer, f"{result.name}: segment")
    labels = [str(v) for v in sorted(classes) if v != 0]
    evaluate = ["evaluate", str(result.seg_dir), str(root / "labelsTr"), "--cases", *test_ids, "--labels", *labels,
                "-o", str(result.metrics), "--model", str(result.model), "--quiet", *over]
    _run_step(f"{result.name}: evaluate against the reference labels", evaluate, timer, f"{result.name}: evaluate")
    for case_id, image in zip(test_ids, images):
        png = result.folder / "previews" / f"{case_id}.png"
        sdm = result.seg_dir / f"{case_id}_sdm.nii.gz"
        what = "SDM" if has_sdm else "SDM of the labels"
        preview = ["preview", image, "--label", str(result.seg_dir / f"{case_id}_label.nii.gz"),
                   "--sdm", str(sdm), "--entropy", str(result.seg_dir / f"{case_id}_entropy.nii.gz"),
                   "--model", str(result.model), "--title", f"{case_id}, {result.name}: outline, {what}, entropy",
                   "-o", str(png), *over]
        _run_step(f"{result.name}: picture of {case_id}", preview, timer, f"{result.name}: pictures")
        result.pictures.append(png)


# ------------------------------------------------------------------------------------------------ training
def _validation_args(split: dict, preset: dict) -> List[str]:
    """Validation from the unlabeled pool when it has two cases or more (its label is read only for validation),
    else none; the split's ``val`` list is the test set and never validates."""
    pool = [c for c in split.get("train", []) if c not in split.get(preset["split_labeled"], [])]
    n = 1 if len(pool) >= 2 else 0
    return ["--validation", str(n), "--set", "data.split_val=null"]


def _tidy_run(run_dir: Path, model: Path) -> List[Path]:
    """Remove what a finished demo no longer needs: the resume state and the model file(s) not used. Returns the
    removed paths."""
    removed = []
    names = ["resume.pt"] + [f"{stem}{suffix}" for stem in ("best", "last") if stem != model.stem
                             for suffix in (".pt", ".json")]
    for name in names:
        path = run_dir / name
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def train_argv(method: str, root: Path, split: dict, preset: dict, iterations: int, width: int, run_dir: Path,
               args: argparse.Namespace) -> List[str]:
    """The ``semisupseg train`` arguments of ``method`` into ``run_dir``: the same data, budget, seed, width and
    validation case for every method."""
    every = str(min(preset["val_every"], iterations))
    return ["train", "--method", method, "--labeled", str(root), "--split-labeled", preset["split_labeled"],
            "--out", str(run_dir), "--iterations", str(iterations),
            "--patch-size", *map(str, preset["patch_size"]), "--device", args.device, "--seed", str(args.seed),
            "--set", f"model.n_filters={width}", "--set", f"val_every={every}", "--set", f"save_every={every}",
            "--set", f"num_threads={args.threads}", *recipe_sets(method),
            *_validation_args(split, preset), *(["--overwrite"] if args.overwrite else [])]


def recipe_sets(method: str) -> List[str]:
    """The ``--set`` arguments of the demo's short-budget recipe for ``method`` (:data:`SHORT_BUDGET_SETS`, and
    :data:`SCALED_RAMP_SET` when the method has a ramped unlabeled term)."""
    import dataclasses

    from semisupseg.methods import get_method

    sets = list(SHORT_BUDGET_SETS)
    if "rampup_period" in {f.name for f in dataclasses.fields(get_method(method).Params)}:
        sets.append(SCALED_RAMP_SET)
    return [a for s in sets for a in ("--set", s)]


def training_jobs(n_methods: int, threads: int, cores: int, one_at_a_time: bool) -> int:
    """How many trainings run at the same time: as many as the machine has ``threads`` cores for (at least one),
    all of them at most; one with ``one_at_a_time``."""
    return 1 if one_at_a_time else max(1, min(n_methods, cores // max(1, threads)))


def train_models(methods: List[str], root: Path, split: dict, preset: dict, iterations: int, width: int, out: Path,
                 args: argparse.Namespace, timer: Timer) -> List[ModelResult]:
    """``semisupseg train`` each method into ``out/<method>/run``, side by side when the machine has the cores
    (:mod:`semisupseg.cli.side_by_side`: one child process per method, its log in ``out/<method>/train.log``);
    returns their results (best model, else last)."""
    from semisupseg.cli.side_by_side import ChildRun, run_side_by_side, usable_cores

    runs = []
    for method in methods:
        argv = train_argv(method, root, split, preset, iterations, width, out / method / "run", args)
        _print_command(f"{method}: train", argv)
        runs.append(ChildRun(name=method, argv=argv, log=out / method / "train.log"))
    jobs = training_jobs(len(methods), args.threads, usable_cores(), args.one_at_a_time)
    how = "" if len(methods) == 1 else " at the same time" if jobs > 1 else " one after the other"
    _note(f"training {' and '.join(methods)}{how}, {args.threads} thread(s) each; "
          f"{'their logs' if len(runs) > 1 else 'its log'}: {', '.join(str(r.log) for r in runs)}")
    wall, cpu = time.perf_counter(), _children_cpu()
    run_side_by_side(runs, jobs)
    part = f"train {' + '.join(methods)}" + (" (side by side)" if jobs > 1 and len(methods) > 1 else "")
    timer.add(part, time.perf_counter() - wall, _children_cpu() - cpu)
    _note("trained: " + ", ".join(f"{r.name} in {_duration(r.seconds)}" for r in runs))
    results = []
    for method in methods:
        run_dir = out / method / "run"
        model = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
        results.append(ModelResult(name=method, method=method, folder=out / method, model=model))
    return results


def _children_cpu() -> float:
    """User + system CPU seconds of this process's ended (waited-for) children (``os.times`` where there is no
    ``resource`` module: Windows, which reports 0 there)."""
    try:
        import resource
    except ImportError:
        times = os.times()
        return times.children_user + times.children_system
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------ comparison
def read_scores(metrics_csv: Path) -> Dict[Tuple[str, int], Tuple[float, float]]:
    """``{(case, label): (dice, hd95 mm)}`` from an ``evaluate`` CSV (``nan`` where a distance is undefined)."""
    def num(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return math.nan

    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        return {(r["case"], int(r["label"])): (num(r["dice"]), num(r["hd95_mm"])) for r in csv.DictReader(fh)}


def _mean(values: Sequence[float]) -> Tuple[float, int]:
    finite = [v for v in values if not math.isnan(v)]
    return (sum(finite) / len(finite) if finite else math.nan), len(finite)


def comparison_rows(results: List[ModelResult], test_ids: List[str], classes: Dict[int, str]) -> List[dict]:
    """Long-format rows (:data:`COMPARISON_COLUMNS`): per model, case and class, then per model the mean over the
    cases per class and over cases and classes (``case`` = ``mean``). HD95 means are over the cases where it is
    defined (an empty prediction has none; ``hd95_cases`` counts them)."""
    rows: List[dict] = []
    fg = [v for v in sorted(classes) if v != 0]
    for r in results:
        scores = read_scores(r.metrics)
        for case in test_ids:
            for v in fg:
                d, h = scores.get((case, v), (math.nan, math.nan))
                rows.append({"model": r.name, "method": r.method, "case": case, "class": classes[v], "label": v,
                             "dice": d, "hd95_mm": h, "hd95_cases": int(not math.isnan(h))})
        for v in fg + [None]:
            keys = [(c, w) for c in test_ids for w in (fg if v is None else [v])]
            d, _ = _mean([scores.get(k, (math.nan, math.nan))[0] for k in keys])
            h, n = _mean([scores.get(k, (math.nan, math.nan))[1] for k in keys])
            rows.append({"model": r.name, "method": r.method, "case": "mean",
                         "class": "all classes" if v is None else classes[v], "label": "" if v is None else v,
                         "dice": d, "hd95_mm": h, "hd95_cases": n})
    return rows


def _fmt(value: float, digits: int) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def _count(rows: List[dict], mean_row: dict) -> int:
    """How many per-case rows a mean row averages."""
    return sum(1 for r in rows if r["model"] == mean_row["model"] and r["case"] != "mean"
               and (mean_row["label"] == "" or r["label"] == mean_row["label"]))


def comparison_table(rows: List[dict], models: List[str]) -> str:
    """The rows as one aligned Markdown table: a line per (case, class), a Dice and an HD95 column per model."""
    keys: List[Tuple[str, str]] = []
    cell: Dict[Tuple[str, str, str], dict] = {}
    for r in rows:
        key = (r["case"], r["class"])
        if key not in keys:
            keys.append(key)
        cell[(r["model"], *key)] = r
    header = ["case", "class"] + [f"{m} {what}" for m in models for what in ("Dice", "HD95 mm")]
    body = []
    for case, cls in keys:
        line = [case, cls]
        for m in models:
            r = cell.get((m, case, cls))
            partial = r and r["case"] == "mean" and 0 < r["hd95_cases"] < _count(rows, r)
            line += [_fmt(r["dice"], 3), _fmt(r["hd95_mm"], 2) + ("*" if partial else "")] if r else ["", ""]
        body.append(line)
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                                 enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" if i >= 2 else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), sep] + [fmt(b) for b in body])


def write_comparison(out: Path, rows: List[dict], table: str, preamble: List[str], overwrite: bool) -> List[Path]:
    """``comparison.md`` (the preamble lines and the table) and ``comparison.csv`` (the rows), atomically."""
    from semisupseg.evaluation import write_csv_atomic
    from semisupseg.fileio import atomic_open

    md = out / COMPARISON_MD
    with atomic_open(md, "w", overwrite) as fh:
        fh.write("\n".join(preamble) + "\n\n" + table + "\n")
    return [md, write_csv_atomic(out / COMPARISON_CSV, COMPARISON_COLUMNS, rows, overwrite)]


# ------------------------------------------------------------------------------------------------ earlier outputs
def read_manifest(out: Path) -> List[str]:
    """The files an earlier demo wrote in ``out`` (relative POSIX paths), from its :data:`MANIFEST`; ``[]`` when
    there is none or it cannot be read (then nothing is removed)."""
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)]


def snapshot(out: Path) -> Dict[str, Tuple[int, int, int]]:
    """``{relative POSIX path: (inode, mtime ns, size)}`` of every file under ``out`` (the manifest excluded)."""
    found = {}
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        if rel != MANIFEST and p.is_file():
            st = p.stat()
            found[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def files_written(before: Dict[str, Tuple[int, int, int]], after: Dict[str, Tuple[int, int, int]]) -> List[str]:
    """The files of ``after`` that are new or changed since ``before`` (two :func:`snapshot` s): those the run
    wrote (atomic writes replace the inode, so a rewrite is seen even within a timestamp's resolution)."""
    return sorted(rel for rel, st in after.items() if before.get(rel) != st)


def tidy_earlier_outputs(out: Path, earlier: Sequence[str], written: Sequence[str]) -> Tuple[List[Path], List[Path]]:
    """After a demo with ``--overwrite``: remove the files of ``earlier`` (an earlier demo's manifest) that this
    run did not write again (``written``), and the folders that leaves empty; never a path outside ``out``.

    Returns ``(removed, foreign)``: the removed files and the files under ``out`` that neither demo wrote (kept)."""
    root = out.resolve()
    keep = set(written)
    removed: List[Path] = []
    for rel in earlier:
        if rel in keep:
            continue
        path = out / rel
        try:
            resolved = path.resolve()
            inside = resolved != root and resolved.is_relative_to(root)
        except (OSError, ValueError):
            inside = False
        if inside and path.is_file():
            path.unlink()
            removed.append(path)
            parent = path.parent
            while parent.resolve() != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    known = keep | set(earlier) | {MANIFEST}
    foreign = sorted(p for p in out.rglob("*") if p.is_file() and p.relative_to(out).as_posix() not in known)
    return removed, foreign


def write_manifest(out: Path, files: Sequence[str]) -> Path:
    """Record the files this demo wrote (``out/MANIFEST``), atomically."""
    from semisupseg.fileio import atomic_open

    with atomic_open(out / MANIFEST, "w", True) as fh:
        json.dump({"written_by": "semisupseg demo", "files": list(files)}, fh, indent=1)
        fh.write("\n")
    return out / MANIFEST


# ------------------------------------------------------------------------------------------------ the command
def run(args: argparse.Namespace) -> int:
    from semisupseg.data import load_split, read_dataset_json, sample_dataset
    from semisupseg.errors import InputError
    from semisupseg.methods import get_method

    preset = PRESETS[args.dataset]
    compare = None if str(args.compare_with).lower() == "none" else args.compare_with
    for name, option in ((args.method, "--method"), (compare, "--compare-with")):
        if name is not None:
            try:
                get_method(name)
            except KeyError as exc:
                raise InputError(f"{option}: {exc.args[0]}") from None
    if compare == args.method:
        raise InputError(f"--compare-with {compare} is the --method itself; choose another method or 'none'")
    iterations = preset["iterations"] if args.iterations is None else args.iterations
    width = preset["n_filters"] if args.width is None else args.width
    if iterations < 1 or width < 1 or args.threads < 1:
        raise InputError("--iterations, --width and --threads must be at least 1")
    root = sample_dataset(args.dataset)
    split = load_split(root / "splits.json")
    info = read_dataset_json(root / "dataset.json")
    classes = {int(v): str(n) for n, v in zip(info.names, info.label_values)}
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError("demo output folder is not empty; pass --overwrite to replace it or choose --out", out)
    out.mkdir(parents=True, exist_ok=True)
    earlier, before = read_manifest(out), snapshot(out)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # segmentation and pictures run in this process (training sets its own)
    try:
        code = _run(args, preset, compare, iterations, width, root, split, classes, out)
    finally:
        torch.set_num_threads(threads)
    written = files_written(before, snapshot(out))
    removed, foreign = tidy_earlier_outputs(out, earlier, written)
    write_manifest(out, written)
    if removed:
        print(f"Removed {len(removed)} file(s) of the earlier demo in {out} that this one did not write again "
              f"(listed in its {MANIFEST}).")
    if foreign:
        shown = ", ".join(str(p.relative_to(out)) for p in foreign[:8]) + (" ..." if len(foreign) > 8 else "")
        print(f"Not written by this demo, left as they were ({len(foreign)} file(s)): {shown}")
    return code


def _run(args: argparse.Namespace, preset: dict, compare: Optional[str], iterations: int, width: int, root: Path,
         split: dict, classes: Dict[int, str], out: Path) -> int:
    test_ids = split.get("val") or split["train"][-1:]
    images = [str(_image_of(root, case_id)) for case_id in test_ids]
    labeled = split.get(preset["split_labeled"], [])
    timer = Timer()
    results: List[ModelResult] = []
    preamble = [f"# semisupseg demo: {args.dataset} sample, test scans {', '.join(test_ids)}", ""]

    # 1. the shipped model(s) for this dataset
    if not args.no_shipped:
        fits, notes = fitting_shipped_models(classes)
        for text in notes:
            _note(text)
        if not fits:
            _note(f"no shipped model segments the {args.dataset} sample's classes: that part is skipped")
            preamble.append(f"- No shipped model fits the {args.dataset} sample: none in the table.")
        for entry in fits:
            result = ModelResult(name=f"shipped-{entry.name}", method=entry.card.method,
                                 folder=out / f"shipped-{entry.name}", model=Path(entry.path))
            roles = shipped_data_roles(entry.card, test_ids)
            said = {"labeled": "its training labels (not a held-out score)",
                    "unlabeled": "its unlabeled training images (labels never read)",
                    "test": "its own held-out test list", "unused": "not in its training data",
                    "unknown": "not recorded in its card"}
            where = "; ".join(f"{c}: {said[r]}" for c, r in roles.items())
            training = entry.card.training or {}
            members = training.get("ensemble_of")
            method = f"{entry.card.method}, {members} networks averaged, each" if members else entry.card.method
            text = (f"{result.name}: {method} trained on {training.get('labeled_cases', '?')} labeled + "
                    f"{training.get('unlabeled_cases', '?')} unlabeled cases for {training.get('iterations', '?')} "
                    f"iterations; the test scans are {where}")
            _note(text)
            preamble.append(f"- {text}.")
            segment_score_picture(result, result.name, root, test_ids, images, classes, args, timer)
            results.append(result)

    # 2-3. the semi-supervised method and the comparison, trained the same way
    trained = train_models([args.method] + ([compare] if compare else []), root, split, preset, iterations, width,
                           out, args, timer)
    for result in trained:
        segment_score_picture(result, result.method, root, test_ids, images, classes, args, timer)
        _tidy_run(result.folder / "run", result.model)
        results.append(result)
    roles = json.loads((trained[0].folder / "run" / "data.json").read_text(encoding="utf-8"))
    preamble.append(f"- Trained ({', '.join(r.method for r in trained)}): the same {len(labeled)} labeled cases "
                    f"({', '.join(roles.get('labeled', labeled))}), {iterations} iterations, seed {args.seed}, "
                    f"V-Net width {width}; model selection on "
                    f"{', '.join(roles.get('validation') or []) or 'nothing (the last model is used)'}; "
                    f"{args.method}'s unlabeled pool: {', '.join(roles.get('unlabeled') or []) or 'none'}.")
    preamble.append("- Dice (0-1, higher is better) and HD95 (mm, lower is better) per test case and class; "
                    "HD95 n/a where a class was not predicted at all (* a mean over the cases where it is defined). Two test scans: a demonstration, not a "
                    "benchmark.")

    # 4. the comparison table
    rows = comparison_rows(results, test_ids, classes)
    table = comparison_table(rows, [r.name for r in results])
    written = write_comparison(out, rows, table, preamble, args.overwrite)
    print(f"\nComparison on the {len(test_ids)} held-out test scan(s) ({', '.join(test_ids)}):\n\n{table}\n")

    # 5. where everything is
    print("Where everything is:")
    for r in results:
        print(f"  {r.folder}/  {r.name}: model {r.model}, segmentations/, metrics.csv, previews/ "
              f"({len(r.pictures)} pictures)")
    print(f"  {written[0]}, {written[1]}: the comparison table")
    print("Time per part (wall clock; CPU = the CPU time of this process, or of the training processes, all "
          "threads):")
    print("\n".join(timer.lines()), flush=True)
    return 0


def _image_of(root: Path, case_id: str) -> Path:
    matches = sorted((root / "imagesTr").glob(f"{case_id}*"))
    if not matches:
        from semisupseg.errors import InputError

        raise InputError(f"sample image of case {case_id} not found", root / "imagesTr")
    return matches[0]
