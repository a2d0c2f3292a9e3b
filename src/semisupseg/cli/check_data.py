"""``semisupseg check-data``: check training data before training, with the checks ``semisupseg train`` runs.

Takes the same data options as ``train`` (``--labeled``, ``--labels``, ``--unlabeled``, ``--split``,
``--split-labeled``, ``--validation``, ``--config``, ``--set``; ``--method`` leaves the unlabeled pool out for
methods that train on labeled cases only, as training does) and reads every file once. It lists the cases found
as labeled / unlabeled / validation (split rules of ``train``), the classes, and every problem, one line naming the
file: images and labels that do not pair by name, a label whose grid (size, spacing, origin, direction) differs from
its image's, label values outside the classes (``dataset.json`` or ``data.label_values``), unreadable files,
different voxel spacings without ``data.spacing``. When the data can be used it also shows the settings training
would derive from it (patch size, spacing, normalisation; your own settings are kept and marked so).

Exit codes: 0 the data can be used (warnings allowed), 2 it cannot. ``--json`` prints one JSON object instead
(``usable``, ``labeled``/``unlabeled``/``validation`` case lists with files, size and spacing, ``classes``,
``problems`` with ``severity``, ``path``, ``case``, ``message``, ``line``; ``notes``); ``--report FILE`` writes the
same object to FILE (what the Slicer training panel reads: ``DataReport.from_dict``).
"""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: "argparse._SubParsersAction") -> None:
    from semisupseg.cli.train import add_data_arguments

    p = subparsers.add_parser(
        "check-data", help="check training data (pairing, geometry, label values, readability) before training",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object (for programs)")
    p.add_argument("--report", metavar="FILE", help="also write the report as one JSON object to FILE (what the "
                   "Slicer training panel reads from its check-data child)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.cli.train import explicit_overrides
    from semisupseg.errors import InputError
    from semisupseg.training import TrainConfig, apply_overrides, load_config
    from semisupseg.training.datacheck import DataReport, check_train_data

    try:
        cfg = load_config(args.config) if args.config else TrainConfig()
        apply_overrides(cfg, explicit_overrides(args))
        apply_overrides(cfg, args.overrides)
        with_unlabeled = True
        if args.method or args.config:  # a method named: its use of the unlabeled pool, as in training
            from semisupseg.training.engine import method_class

            with_unlabeled = bool(getattr(method_class(cfg.method), "uses_unlabeled", True))
        report = check_train_data(cfg.data, with_unlabeled=with_unlabeled)
        if report.usable:  # the defaults training would take from this data (patch size, spacing, normalisation)
            from semisupseg.data.fingerprint import describe_plan, plan_for

            report.plan = plan_for(cfg)
            report.plan_lines = describe_plan(report.plan)
    except InputError as exc:  # the options themselves (config file, --set key, method name)
        if not (args.json or args.report):
            raise
        from semisupseg.data.cases import DataProblem

        report = DataReport(problems=[DataProblem.from_error(exc)])
    if args.report:
        from semisupseg.fileio import write_text_atomic

        write_text_atomic(json.dumps(report.to_dict(), indent=1) + "\n", args.report, overwrite=True)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(report.text())
    return 0 if report.usable else 2
