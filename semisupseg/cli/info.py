"""``semisupseg info MODEL``: show a model file's card (what it segments, at which spacing, how it was trained)."""
from __future__ import annotations

import argparse
import json
from typing import Any, List, Tuple


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "info", help="show a model file's metadata (classes, spacing, patch size, training summary)",
        description="Print the model card stored in a SemiSupSeg model file (.pt). The file is read safely "
                    "(weights_only): nothing in it is executed.")
    p.add_argument("model", metavar="MODEL", help="model file (.pt) written by 'semisupseg train' or "
                                                  "'semisupseg import-checkpoint', or a catalogue name "
                                                  "('semisupseg models')")
    p.add_argument("--json", action="store_true", help="print the card as JSON (for scripts)")
    p.set_defaults(func=run)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _xyz(values, unit: str = "") -> str:
    return " x ".join(f"{float(v):g}" for v in values) + (f" {unit}" if unit else "")


def aligned(rows: List[Tuple[str, str]], indent: str = "") -> List[str]:
    """``key: value`` lines with the values in one column."""
    width = max((len(k) for k, _ in rows), default=0) + 2
    return [f"{indent}{(k + ':').ljust(width)}{v}" for k, v in rows]


def card_lines(card: Any, path=None, size_mb: float = None, n_params: int = None) -> List[str]:
    """The card as aligned lines for people: the model, then the training summary (the settings derived from the
    data and the training data's statistics in short)."""
    from semisupseg.checkpoint import member_lines, network_text

    rows: List[Tuple[str, str]] = []
    if path is not None:
        rows.append(("model file", f"{path} ({size_mb:.1f} MB, {n_params:,} parameters)"))
    net = network_text(card.network)
    rows += [("method", card.method), ("network", f"{card.arch} ({net})"),
             ("classes", ", ".join(f"{v}={n}" for n, v in zip(card.class_names, card.label_values))),
             ("input channels", str(card.in_channels)), ("spacing (x,y,z)", _xyz(card.spacing_xyz, "mm")),
             ("patch (x,y,z)", _xyz(card.patch_size_xyz, "voxels")),
             ("intensity norm.", ", ".join(f"{k}={v}" for k, v in card.normalization.items()
                                           if v is not None and v is not False) or "none"),
             ("package version", str(card.package_version)), ("created", str(card.created)),
             ("format version", str(card.format_version))]
    rows += [(k, json.dumps(v)) for k, v in card.extra.items()]
    lines = aligned(rows)
    training = dict(card.training or {})
    if training:
        plan = training.pop("plan", None) or {}
        stats = training.pop("data_statistics", None) or {}
        members = training.pop("members", None)
        trows = [(k, _value(v)) for k, v in training.items()]
        trows += member_lines(members)  # an ensemble: one line per member instead of a JSON dump
        for key, value in (plan.get("from_data") or {}).items():
            trows.append((key, f"{_value(value)} (from the data)"))
        if stats:
            trows.append(("training scans", f"{stats.get('cases')} {stats.get('modality', '')}, median "
                                            f"{_xyz(stats.get('median_extent_mm') or [], 'mm')} at "
                                            f"{_xyz(stats.get('median_spacing_xyz') or [], 'mm')}"))
        lines.append("training:")
        lines += aligned(trows, "  ")
    return lines


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import read_model_file

    path = resolve_model(args.model)
    card, state = read_model_file(path, mmap=True)
    if args.json:
        print(card.to_json(indent=2))
        return 0
    n_params = sum(int(t.numel()) for k, t in state.items() if t.is_floating_point() and "running_" not in k)
    for line in card_lines(card, path, path.stat().st_size / 1e6, n_params):
        print(line)
    return 0
