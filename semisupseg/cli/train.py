"""``semisupseg train``: train a registered method (``semisupseg methods`` lists them) and write a run directory.

Settings come, lowest priority first, from the defaults of :class:`semisupseg.training.TrainConfig`, ``--config
FILE`` (YAML/JSON; with ``--resume`` the run's saved ``config.yaml``), the explicit options below, and ``--set
key=value`` overrides (dotted keys: ``optim.lr=0.001``, ``data.validation=4``, ``method_params.consistency=0.1``).

Exit codes: 0 finished, 130 cancelled (SIGINT/SIGTERM or the stop file; the state is saved, continue with
``--resume RUN_DIR``), 2 bad input. Events (JSON lines) go to ``RUN_DIR/events.jsonl`` and, with ``--events -``,
to stdout (what the Slicer module reads); a tqdm bar is shown when stderr is a terminal.

Distributed: ``torchrun --nproc_per_node N -m semisupseg train ...`` (batch sizes are global).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "train", help="train a segmentation model with a (semi-)supervised method",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (checkpoints, events, config)")
    p.add_argument("--iterations", type=int, metavar="N", help="total iterations")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="patch size in voxels, x y z")
    p.add_argument("--batch-size", type=int, metavar="B", help="patches per step (global)")
    p.add_argument("--labeled-batch-size", type=int, metavar="L", help="labeled patches per step (global)")
    p.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last saved state")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run directory holding a run")
    p.add_argument("--overlay-case", metavar="ID", action="append", default=None,
                   help="write training snapshots of this case (repeatable; a labeled, unlabeled or validation "
                        "case of the run) into RUN_DIR/overlays/ID/itNNNNNN/: predicted segmentation, SDM, "
                        "entropy; ground-truth SDM and boundary ring (labeled), SGRS regions (unlabeled); each in "
                        "the case's own geometry (config: overlays.cases)")
    p.add_argument("--overlay-every", type=int, metavar="N",
                   help="snapshot every N iterations and at the last (default 100; the newest "
                        "overlays.keep=3 sets per case are kept)")
    p.add_argument("--events", metavar="PATH|-", help="also write the JSON-line events here ('-' = stdout)")
    p.add_argument("--stop-file", metavar="PATH", help="stop cleanly (saving state) when this file appears")
    p.add_argument("--no-bar", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The options naming the data and the config, shared by ``train`` and ``check-data`` (same meaning)."""
    p.add_argument("--method", help="registered method name (see 'semisupseg methods'); default: from --config")
    p.add_argument("--labeled", metavar="DIR", help="labeled data: dataset folder (imagesTr/labelsTr or LA "
                                                    "<id>/mri_norm2.h5) or an images folder with --labels")
    p.add_argument("--labels", metavar="DIR", help="folder of label maps matching the images in --labeled")
    p.add_argument("--unlabeled", metavar="DIR", action="append", default=None,
                   help="folder of unlabeled images (repeatable)")
    p.add_argument("--split", metavar="FILE", help="split JSON (default: splits.json in the dataset folder)")
    p.add_argument("--split-labeled", metavar="KEY", help="split list of the labeled ids, e.g. labeled_16")
    p.add_argument("--validation", metavar="N|ID,ID", help="held-out validation cases: a number or a comma list "
                                                            "of case ids (0: no validation)")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable), e.g. --set optim.lr=0.005")


def _explicit_overrides(args: argparse.Namespace) -> List[str]:
    """The explicit options as ``key=value`` override strings (applied after the config file)."""
    import json

    out: List[str] = []

    def add(key: str, value) -> None:
        out.append(f"{key}={json.dumps(value)}")

    if args.method:
        add("method", args.method)
    if args.labeled:
        add("data.labeled", str(Path(args.labeled)))
    if args.labels:
        add("data.labels", str(Path(args.labels)))
    if args.unlabeled:
        add("data.unlabeled", [str(Path(u)) for u in args.unlabeled])
    if args.split:
        add("data.split", str(Path(args.split)))
    if args.split_labeled:
        add("data.split_labeled", args.split_labeled)
    if args.validation is not None:
        v = args.validation.strip()
        add("data.validation", int(v) if v.isdigit() else [s.strip() for s in v.split(",") if s.strip()])
    for key, name in (("iterations", "iterations"), ("batch_size", "batch_size"),
                      ("labeled_batch_size", "labeled_batch_size"), ("device", "device"), ("seed", "seed"),
                      ("amp", "amp")):
        value = getattr(args, name, None)  # training-only options are absent from check-data
        if value is not None:
            add(key, value)
    if getattr(args, "patch_size", None):
        add("data.patch_size", list(args.patch_size))
    if getattr(args, "overlay_case", None):
        add("overlays.cases", [str(c) for c in args.overlay_case])
    if getattr(args, "overlay_every", None) is not None:
        add("overlays.every", int(args.overlay_every))
    return out


def run(args: argparse.Namespace) -> int:
    from semisupseg.errors import InputError
    from semisupseg.progress import CancelToken
    from semisupseg.training import Events, TrainConfig, Trainer, apply_overrides, load_config

    resume = args.resume is not None
    run_dir = args.resume if isinstance(args.resume, str) else args.out
    if resume and isinstance(args.resume, str) and args.out and Path(args.out) != Path(args.resume):
        raise InputError(f"--resume {args.resume} and --out {args.out} name different run directories")
    if not run_dir:
        raise InputError("--out RUN_DIR is required (or --resume RUN_DIR)")
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if resume and saved.exists():
        cfg = load_config(saved)
        if args.config:
            raise InputError("--config cannot change a run being resumed; use --set key=value for small changes")
    elif resume:
        raise InputError(f"nothing to resume in {run_dir}: no config.yaml (start it without --resume)")
    else:
        cfg = load_config(args.config) if args.config else TrainConfig()
    apply_overrides(cfg, _explicit_overrides(args))
    apply_overrides(cfg, args.overrides)
    cfg.out = str(run_dir)
    cfg.validate()
    from semisupseg.training.engine import method_class

    method_class(cfg.method)  # an unknown name fails here, before anything is written
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return 0
    from semisupseg.training.heartbeat import describe_process, heartbeat_alive, read_heartbeat, start_refusal

    if heartbeat_alive(read_heartbeat(run_dir)):  # before anything is written: a live run's files stay untouched
        raise InputError(describe_process(read_heartbeat(run_dir)), run_dir)
    refusal = None if resume else start_refusal(run_dir, args.overwrite)
    if refusal is not None:
        raise InputError(refusal, run_dir)
    stream = None
    events_path = None
    if args.events == "-":
        stream = sys.stdout
    elif args.events:
        events_path = Path(args.events)
    events = Events(stream=stream, bar=False if args.no_bar else None)
    extra_file = None
    if events_path is not None:
        extra_file = Events(path=events_path, bar=False)
        events.listeners.append(lambda rec: extra_file.emit(rec["event"], **{k: v for k, v in rec.items()
                                                                              if k not in ("event", "time")}))
    cancel = CancelToken(stop_file=args.stop_file)
    try:
        result = Trainer(cfg, events=events, cancel=cancel, resume=resume, overwrite=args.overwrite).run()
    finally:
        if extra_file is not None:
            extra_file.close()
    if result.status == "cancelled":
        print(f"cancelled at iteration {result.iteration}; continue with: semisupseg train --resume {run_dir}",
              file=sys.stderr)
        return 130
    best = f", best validation Dice {result.best_metric:.4f} at iteration {result.best_iteration}" \
        if result.best_metric is not None else ""
    print(f"finished {result.iteration} iterations{best}; model: {result.best_path or result.last_path}",
          file=sys.stderr)
    return 0
