"""``semisupseg train``: train a registered method (``semisupseg methods`` lists them) and write a run directory.

Settings come, lowest priority first, from the defaults of :class:`semisupseg.training.TrainConfig`, ``--config
FILE`` (YAML/JSON; with ``--resume`` the run's saved ``config.yaml``), the explicit options below, and ``--set
key=value`` overrides (dotted keys: ``optim.lr=0.001``, ``data.validation=4``, ``method_params.consistency=0.1``).
``check-data`` and the Slicer training panel read the same options the same way. ``--method`` is needed unless the
config or the resumed run names one; settings are checked before any data is read.

Exit codes: 0 finished, 130 cancelled (SIGINT/SIGTERM or the stop file; the state is saved, continue with
``--resume RUN_DIR``), 2 bad input. Events (JSON lines) go to ``RUN_DIR/events.jsonl`` and, with ``--events -``,
to stdout (what the Slicer module reads); a tqdm bar is shown when stderr is a terminal, plain progress lines
(iteration, loss, it/s, ETA) otherwise.

Settings left unset are derived from the training data (``semisupseg.data.fingerprint``): the patch size (the median
scan size, sides multiples of 16, within a memory budget), the spacing (the median, when the scans' spacings
differ) and the normalisation (z-score per scan for MRI, clipped percentiles for CT). ``--print-config`` marks them
"(from the data)"; the model card records them.

Semi-supervised training on a fully labeled dataset (the papers' protocol): ``--num-labeled 16`` (or a fraction,
``--num-labeled 0.2``) keeps the first 16 training cases labeled and uses the others as unlabeled.

Distributed: ``torchrun --nproc_per_node N -m semisupseg train ...`` (batch sizes are global).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

#: the stop file a run watches when ``--stop-file`` is not given, inside its run folder (the Slicer panel's
#: ``SemiSupSegLib.training_logic.STOP_FILE``)
DEFAULT_STOP_FILE = ".stop"


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "train", help="train a segmentation model with a (semi-)supervised method",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (checkpoints, events, config)")
    p.add_argument("--iterations", type=int, metavar="N", help="total iterations")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="patch size in voxels, x y z, each a multiple of 16 (default: from the data: the median "
                        "scan size within a memory budget)")
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
    p.add_argument("--stop-file", metavar="PATH",
                   help="stop cleanly (saving state) when this file appears (default: RUN_DIR/.stop made or touched "
                        "after the start: what the Slicer panel's Cancel creates for a run it did not start)")
    p.add_argument("--no-bar", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The options naming the data and the config, shared by ``train`` and ``check-data`` (same meaning)."""
    p.add_argument("--method", help="registered method name (see 'semisupseg methods'); train needs it unless "
                                    "--config or --resume gives it")
    p.add_argument("--labeled", metavar="DIR", help="labeled data: dataset folder (imagesTr/labelsTr or LA "
                                                    "<id>/mri_norm2.h5) or an images folder with --labels")
    p.add_argument("--labels", metavar="DIR", help="folder of label maps matching the images in --labeled")
    p.add_argument("--unlabeled", metavar="DIR", action="append", default=None,
                   help="folder of unlabeled images (repeatable)")
    p.add_argument("--split", metavar="FILE", help="split JSON (default: splits.json in the dataset folder)")
    p.add_argument("--split-labeled", metavar="KEY", help="split list of the labeled ids, e.g. labeled_16")
    p.add_argument("--num-labeled", metavar="N|FRACTION",
                   help="use only the first N training cases as labeled and the others as unlabeled (the papers' "
                        "protocol on a fully labeled dataset); a fraction such as 0.2 takes that share of them")
    p.add_argument("--validation", metavar="N|ID,ID", help="held-out validation cases: a number or a comma list "
                                                            "of case ids (0: no validation); it replaces a split "
                                                            "file's own validation list")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable), e.g. --set optim.lr=0.005")


def explicit_overrides(args: argparse.Namespace) -> List[str]:
    """The explicit options of ``train`` or ``check-data`` (parsed ``args``) as ``key=value`` override strings for
    :func:`semisupseg.training.apply_overrides`, e.g. ``["method=\"dtc\"", "data.labeled=\"/data/LA\""]``
    (values JSON-encoded). They go over the config file and under ``--set``: apply these first, then
    ``args.overrides``. Options a command does not have (``check-data`` has no ``--iterations``) are skipped;
    ``--num-labeled`` as a fraction is turned into a count here (this reads the dataset folder)."""
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
    if getattr(args, "num_labeled", None) is not None:
        add("data.num_labeled", _num_labeled_count(args))
    if args.validation is not None:
        v = args.validation.strip()
        add("data.validation", int(v) if v.isdigit() else [s.strip() for s in v.split(",") if s.strip()])
        add("data.split_val", None)  # typed on the command line, it wins over a split file's validation list
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


def _num_labeled_count(args: argparse.Namespace) -> int:
    """``--num-labeled`` as a count: N as given, a fraction ``0 < f < 1`` of the training cases that have labels
    (as the same options, without ``--num-labeled``, would use them), rounded, at least 1."""
    from semisupseg.errors import InputError

    text = str(args.num_labeled).strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--num-labeled takes a count (e.g. 16) or a fraction (e.g. 0.2), got {text!r}") from None
    if value >= 1 and value.is_integer():
        return int(value)
    if not 0 < value < 1:
        raise InputError(f"--num-labeled takes a count >= 1 or a fraction between 0 and 1, got {text}")
    from semisupseg.data import build_dataset
    from semisupseg.training import TrainConfig, apply_overrides, load_config
    from semisupseg.training.loading import dataset_spec

    probe = load_config(args.config) if args.config else TrainConfig()
    apply_overrides(probe, explicit_overrides(argparse.Namespace(**{**vars(args), "num_labeled": None})))
    apply_overrides(probe, args.overrides)
    probe.data.num_labeled = None
    total = len(build_dataset(dataset_spec(probe.data)).labeled)
    count = max(1, int(round(value * total)))
    _say(f"--num-labeled {text}: {count} of the {total} labeled training cases stay labeled")
    return count


def _check_unlabeled_pool(cfg) -> None:
    """A method that learns from unlabeled cases needs some: say how to get them (``--num-labeled``)."""
    from semisupseg.errors import InputError
    from semisupseg.training.engine import method_class
    from semisupseg.training.loading import resolve_cases

    if not getattr(method_class(cfg.method), "uses_unlabeled", True) or cfg.batch_size <= cfg.labeled_batch_size:
        return
    ds, _ = resolve_cases(cfg.data, problems=[])  # problems with single files: all reported when training reads
    if ds.unlabeled:
        return
    raise InputError(
        f"method {cfg.method!r} also learns from unlabeled cases, but none is left ({len(ds.labeled)} labeled, "
        f"{len(ds.val)} validation): use --num-labeled N (or a fraction such as 0.2) to keep N cases labeled and "
        "use the others as unlabeled (the papers' protocol), add --unlabeled DIR, or train --method supervised",
        cfg.data.labeled)


def _check_resume_iterations(run_dir: Path, iterations: int) -> None:
    """A resumed run must have iterations left: ``iterations`` (the planned end, or a new ``--iterations``) before
    the saved state's iteration would end the run where it stands with its config rewritten shorter, and at it
    nothing would train (while ``--set`` changes were written into the run's config)."""
    from semisupseg.errors import InputError
    from semisupseg.training.engine import saved_iteration

    done = saved_iteration(run_dir)
    if done is None:
        return  # nothing saved: the engine says what can be done
    if iterations < done:
        raise InputError(f"--iterations {iterations} ends before the saved state (iteration {done}): give more "
                         f"iterations to continue, or leave --iterations out to finish the planned run", run_dir)
    if iterations == done:
        raise InputError(f"the run has done its {done} iterations: give --iterations N (more than {done}) to train "
                         "it further", run_dir)


def _print_config(cfg) -> None:
    """The resolved config as YAML; settings derived from the data are marked ``# (from the data)``."""
    import yaml

    data = cfg.to_dict()
    plan = data.pop("plan", None) or {}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    derived = {key.split(".", 1)[1] for key in plan.get("left_to_data") or plan.get("from_data") or ()}
    lines, section = [], None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section = line.split(":", 1)[0]
        name = line.strip().split(":", 1)[0]
        if section == "data" and line.startswith("  ") and not line.startswith("   ") and name in derived:
            line += f"  # (from the data) {plan.get('reasons', {}).get('data.' + name, '')}".rstrip()
        lines.append(line)
    print("\n".join(lines))


def _folder_state(folder: Path):
    """``None`` when ``folder`` does not exist, else the set of names in it (to undo a refused start)."""
    return set(p.name for p in folder.iterdir()) if folder.is_dir() else (None if not folder.exists() else set())


def _undo_start(run_dir: Path, before) -> None:
    """Remove what a refused start of training created in ``run_dir`` (the heartbeat, the first events...), so that
    bad data leaves no half-made run behind; never when a model file was written (work is kept, whatever happens) or
    training had started (its events record how it ended)."""
    import shutil

    if not run_dir.is_dir() or any(run_dir.rglob("*.pt")):
        return
    events = run_dir / "events.jsonl"
    try:  # training had begun: the events and the folder are the record of its failure
        if events.is_file() and '"event": "started"' in events.read_text(encoding="utf-8", errors="replace"):
            return
    except OSError:
        return
    new = [p for p in run_dir.iterdir() if before is None or p.name not in before]
    for p in new:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass
    if before is None:
        try:
            run_dir.rmdir()
        except OSError:
            pass


#: settings a resume cannot change: the saved state holds this network (its classes and input channels) and these
#: cases' index streams. The patch, the batch and the schedule may change (what the out-of-memory advice asks for)
RESUME_FIXED = ("method", "model.", "data.split", "data.split_labeled", "data.num_labeled", "data.split_all",
                "data.split_val", "data.validation", "data.max_unlabeled", "data.num_classes", "data.label_values",
                "data.class_names", "data.in_channels")


def _flat(settings: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and key in ("model", "data", "optim", "overlays"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _absolute_data_paths(cfg) -> None:
    """The data folders and split file of ``cfg`` as absolute paths (relative ones are taken from the working folder,
    as when training starts): a relative path saved in the run's config failed a resume from another folder."""
    d = cfg.data

    def absolute(p):
        return None if p is None else str(Path(p).expanduser().absolute())

    d.labeled, d.labels, d.split = absolute(d.labeled), absolute(d.labels), absolute(d.split)
    d.unlabeled = [absolute(u) for u in d.unlabeled]


def _say(text: str) -> None:
    """A line of the run's own output on stderr, from one process: rank 0 under torchrun (each rank runs this)."""
    from semisupseg.training.distributed import env_is_main

    if env_is_main():
        print(text, file=sys.stderr)


def _check_resume_changes(saved: Dict[str, Any], now: Dict[str, Any], run_dir: Path) -> None:
    """Refuse (one line) a resume that changes the network or the cases (its state could not be loaded: a traceback
    after the data was read); say which other settings change from here on."""
    from semisupseg.errors import InputError

    before, after = _flat(saved), _flat(now)
    changed = [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
               if k not in ("out", "iterations") and before.get(k) != after.get(k)]
    fixed = [c for c in changed if any(c[0] == f or (f.endswith(".") and c[0].startswith(f)) for f in RESUME_FIXED)]
    if fixed:
        raise InputError("--resume cannot change " + ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in fixed) +
                         ": the saved state is for the run's own network and cases; start a new run (--out) to "
                         "train with them", run_dir)
    if changed:
        _say("note: resuming with changed settings (from the saved iteration on): " +
             ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changed))


def run(args: argparse.Namespace) -> int:
    from semisupseg.errors import InputError
    from semisupseg.progress import CancelToken
    from semisupseg.training import (Events, TrainConfig, Trainer, apply_overrides, load_config, load_run_config,
                                     schedule_note)
    from semisupseg.training.config import config_keys
    from semisupseg.training.distributed import env_world_size

    if env_world_size() > 1:  # a worker of torchrun: a launcher killed outright must not leave it training alone
        from semisupseg.processes import end_with_parent

        end_with_parent()
    resume = args.resume is not None
    run_dir = args.resume if isinstance(args.resume, str) else args.out
    if not run_dir and not resume and args.config:
        run_dir = load_config(args.config).out or None  # the config file's own out:
    if resume and isinstance(args.resume, str) and args.out and Path(args.out) != Path(args.resume):
        raise InputError(f"--resume {args.resume} and --out {args.out} name different run directories")
    if not run_dir and not (args.print_config and not resume):  # the config alone needs no folder
        raise InputError("--out RUN_DIR is required (or --resume RUN_DIR)")
    if resume and args.overwrite:
        raise InputError("--resume continues the run and --overwrite starts it afresh: give one of them")
    run_dir = Path(run_dir) if run_dir else None
    saved = run_dir / "config.yaml" if run_dir else None
    saved_settings: Dict[str, Any] = {}
    if resume and saved.exists():
        cfg = load_run_config(saved)
        saved_settings = cfg.to_dict()
        if args.config:
            raise InputError("--config cannot change a run being resumed; use --set key=value for small changes")
    elif resume:
        raise InputError(f"nothing to resume in {run_dir}: no config.yaml (start it without --resume)")
    else:
        cfg = load_config(args.config) if args.config else TrainConfig()
    apply_overrides(cfg, explicit_overrides(args))
    apply_overrides(cfg, args.overrides)
    if not resume and args.method is None and not any(o.split("=", 1)[0].strip() == "method"
                                                      for o in args.overrides or ()) \
            and not (args.config and "method" in config_keys(args.config)):
        raise InputError("choose a method: --method NAME ('semisupseg methods' lists them; 'supervised' learns from "
                         "the labeled cases only)" + (f"; {args.config} names none" if args.config else ""))
    cfg.out = str(run_dir) if run_dir else None
    if not resume:  # the run's config.yaml is what --resume reads, maybe from another folder (Slicer, a scheduler)
        _absolute_data_paths(cfg)
    cfg.validate()
    if resume:
        _check_resume_iterations(run_dir, cfg.iterations)
        _check_resume_changes(saved_settings, cfg.to_dict(), run_dir)
    from semisupseg.training.engine import check_model_options, method_class, method_params

    method_class(cfg.method)  # an unknown name fails here, before anything is written
    params = method_params(cfg)  # so do its parameters
    check_model_options(cfg)  # and the network's options
    from semisupseg.runtime import resolve_device

    resolve_device(cfg.device)  # and a device this machine lacks (it was found after the data was read)
    from semisupseg.data.fingerprint import describe_plan, resolve_plan

    if args.print_config:
        if not resume:
            try:
                resolve_plan(cfg)
            except InputError as exc:  # the config is still shown; training would stop at the same problem
                print(f"note: the settings left to the data are derived when training starts; the data cannot "
                      f"be read now: {exc}", file=sys.stderr)
        import dataclasses

        from semisupseg.training.engine import _plain

        cfg.method_params = _plain(dataclasses.asdict(params))  # every parameter the run would use, as saved
        _print_config(cfg)
        return 0
    from semisupseg.training.distributed import env_is_main
    from semisupseg.training.heartbeat import describe_process, heartbeat_alive, read_heartbeat, start_refusal

    # the run folder's checks belong to the process that owns it (rank 0 under torchrun, as in the engine): the other
    # ranks would otherwise meet rank 0's own heartbeat and refuse to join their run
    if env_is_main():
        if heartbeat_alive(read_heartbeat(run_dir)):  # before anything is written: a live run's files stay untouched
            raise InputError(describe_process(read_heartbeat(run_dir)), run_dir)
        refusal = None if resume else start_refusal(run_dir, args.overwrite)
        if refusal is not None:
            raise InputError(refusal, run_dir)
        from semisupseg.fileio import check_folder_writable

        check_folder_writable(run_dir)  # before the data is read (minutes): a read-only place fails now
    if not resume:
        _check_unlabeled_pool(cfg)
        plan = resolve_plan(cfg)
        for line in describe_plan(plan):
            if "(from the data" in line:
                _say(line)
        note = schedule_note(cfg)
        if note:
            _say(note)
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
    # the default stop file is the one the Slicer panel's Cancel makes for a run it did not start (any system, any
    # host sharing the folder; a signal only reaches a process on this machine): one older than this start is stale
    cancel = CancelToken(stop_file=args.stop_file) if args.stop_file else \
        CancelToken(stop_file=run_dir / DEFAULT_STOP_FILE, newer_than=time.time())
    before = _folder_state(run_dir)
    try:
        result = Trainer(cfg, events=events, cancel=cancel, resume=resume, overwrite=args.overwrite).run()
    except InputError:  # refused (bad data): what this start wrote into the run folder is no output, remove it
        if not resume and env_is_main():  # the folder is rank 0's: another rank's error must not empty it
            _undo_start(run_dir, before)
        raise
    finally:
        if extra_file is not None:
            extra_file.close()
    if result.status == "cancelled":
        if result.interrupted and result.saved_iteration is None:
            _say(f"stopped at iteration {result.iteration} by a second interrupt, before any state was saved: "
                 f"start again (semisupseg train ... --overwrite --out {run_dir})")
        elif result.interrupted:
            _say(f"stopped at iteration {result.iteration} by a second interrupt without saving; continue from "
                 f"iteration {result.saved_iteration} with: semisupseg train --resume {run_dir}")
        else:
            _say(f"cancelled at iteration {result.iteration}; continue with: semisupseg train --resume {run_dir}")
        return 130
    best = f", best validation Dice {result.best_metric:.4f} at iteration {result.best_iteration}" \
        if result.best_metric is not None else ""
    _say(f"finished {result.iteration} iterations{best}; model: {result.best_path or result.last_path}")
    return 0
