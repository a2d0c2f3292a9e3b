"""``semisupseg models``: the model catalogue (shipped models, models the user added, registered training runs).

* ``semisupseg models [list] [--json]``: one aligned row per model (name, source, method, classes, spacing, path);
  a model whose file is missing or unreadable is listed with the reason instead of its card.
* ``semisupseg models add FILE [--name NAME]``: register a model file (its absolute path is stored).
* ``semisupseg models register-run RUN_DIR [--name NAME]``: register a training run (its best.pt, else last.pt).
* ``semisupseg models info NAME``: the entry and its model card.
* ``semisupseg models remove NAME``: forget a user or run model (files are left alone).

The catalogue lives in ``$SEMISUPSEG_HOME`` (default ``~/.semisupseg``); ``--home`` overrides it. The same names
work in ``semisupseg segment --model NAME`` and ``semisupseg info NAME``, and the Slicer module lists the same
models.
"""
from __future__ import annotations

import argparse
import json
from typing import List, Sequence


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "models", help="list, add and remove models of the catalogue (names usable in 'segment --model NAME')",
        description="The model catalogue: models shipped with semisupseg, model files you added and training runs "
                    "you registered. Without an action, lists them.")
    p.add_argument("--home", default=None,
                   help="catalogue folder (default: $SEMISUPSEG_HOME, else ~/.semisupseg)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="list the models (the default action)")
    ls.add_argument("--json", action="store_true", help="print the entries as a JSON list")
    add = sub.add_parser("add", help="add a model file (.pt) under a short name")
    add.add_argument("file", metavar="FILE", help="SemiSupSeg model file (.pt)")
    add.add_argument("--name", "-n", default=None, help="short name (default: the file name without .pt)")
    reg = sub.add_parser("register-run", help="add a training run folder (its best.pt, else last.pt)")
    reg.add_argument("run_dir", metavar="RUN_DIR", help="folder written by 'semisupseg train --out'")
    reg.add_argument("--name", "-n", default=None, help="short name (default: the folder name)")
    info = sub.add_parser("info", help="show a model's entry and card")
    info.add_argument("name", metavar="NAME")
    info.add_argument("--json", action="store_true", help="print the entry (card included) as JSON")
    rm = sub.add_parser("remove", help="forget a user or run model (its files are kept)")
    rm.add_argument("name", metavar="NAME")
    p.set_defaults(func=run, action=None, json=False)


def _spacing(entry) -> str:
    return "x".join(f"{s:g}" for s in entry.spacing_xyz) + " mm" if entry.spacing_xyz else "-"


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> List[str]:
    """Left-aligned columns separated by two spaces (the last column is not padded)."""
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header) - 1)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1])

    return [line(header)] + [line(r) for r in rows]


def model_purpose(path) -> str:
    """One line of what the model at ``path`` was trained on, from its card: ``"MRI scans of about 35 x 50 x 36 mm
    (median of 140 training scans); Task04_Hippocampus (...)"``; ``""`` when the card does not say."""
    from semisupseg.checkpoint import read_card
    from semisupseg.errors import SemiSupSegError

    try:
        card = read_card(path)
    except (SemiSupSegError, OSError):
        return ""
    return training_summary(card)


def training_summary(card) -> str:
    """:func:`model_purpose` of a model card already read: ``""`` when it does not say."""
    training = card.training or {}
    stats = training.get("data_statistics") or {}
    parts = []
    extent = stats.get("median_extent_mm")
    if extent:
        cases = f" (median of {stats['cases']} training scans)" if stats.get("cases") else ""
        parts.append(f"{stats.get('modality', 'scans')} scans of about {' x '.join(f'{v:.0f}' for v in extent)} mm"
                     + cases)
    dataset = (training.get("data") or {}).get("dataset")
    if dataset:
        parts.append(str(dataset))
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.checkpoint import aligned_lines

    cat = ModelCatalogue(args.home)
    action = args.action or "list"
    if action == "list":
        entries = cat.entries()
        if args.json:
            print(json.dumps([e.to_dict() for e in entries], indent=2))
            return 0
        if not entries:
            print(f"no models yet: add one with 'semisupseg models add FILE' (catalogue: {cat.registry_path})")
            return 0
        rows = []
        for e in entries:
            if e.error is not None:
                rows.append([e.name, e.source, "-", "-", "-", f"{e.path}  [unusable: {e.error}]"])
            else:
                rows.append([e.name, e.source, e.method, ",".join(e.classes), _spacing(e), str(e.path)])
        for line in format_table(rows, ["NAME", "SOURCE", "METHOD", "CLASSES", "SPACING", "PATH"]):
            print(line.rstrip())
        purposes = [(e.name, model_purpose(e.path)) for e in entries if e.error is None]
        if any(text for _, text in purposes):
            print("\nwhat each model was trained on (segment scans like these):")
            for name, text in purposes:
                if text:
                    print(f"  {name}: {text}")
        return 0
    if action == "add":
        e = cat.add(args.file, name=args.name)
        print(f"added {e.name!r} -> {e.path}")
        return 0
    if action == "register-run":
        e = cat.register_run(args.run_dir, name=args.name)
        note = f" ({e.error})" if e.error else ""
        print(f"registered run {e.name!r} -> {e.path}{note}")
        return 0
    if action == "remove":
        e = cat.remove(args.name)
        print(f"removed {e.name!r} ({e.source}); its files are kept: {e.run_dir or e.path}")
        return 0
    if action == "info":
        e = cat.get(args.name)
        if args.json:
            print(json.dumps(e.to_dict(), indent=2))
            return 0
        head = [("name", e.name), ("source", e.source), ("model file", str(e.path))]
        head += [("training run", str(e.run_dir))] if e.run_dir is not None else []
        head += [("added", str(e.added))] if e.added else []
        if e.error is not None:
            for line in aligned_lines(head + [("unusable", str(e.error))]):
                print(line)
            return 2
        for line in e.card.summary_lines(head):
            print(line)
        return 0
    raise AssertionError(action)
