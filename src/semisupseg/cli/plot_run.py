"""``semisupseg plot-run RUN_DIR -o chart.png``: a chart of a training run from its events log.

Draws the loss terms (smoothed, the raw total faint behind), the validation Dice with the best point ringed, the
validation HD95, the learning rate and the method's own figures (SGRS region fractions, discriminator accuracy)
against the iteration, from RUN_DIR/events.jsonl (or an events file given directly). Works on a running run too
(what the log holds so far). Needs no plotting library: numpy and SimpleITK's PNG writer.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "plot-run", help="draw a training run's loss, validation Dice/HD95 and learning rate as a PNG chart",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="training run folder (or its events.jsonl)")
    p.add_argument("--output", "-o", required=True, metavar="PNG", help="chart to write (.png)")
    p.add_argument("--smooth", type=int, metavar="N",
                   help="moving-average window of the loss curves, in logged iterations (default: about a 25th of "
                        "them; 1 = raw)")
    p.add_argument("--width", type=int, default=1200, metavar="PX", help="picture width in pixels (default 1200, at least 640)")
    p.add_argument("--title", metavar="TEXT", help="title line (default: run, method, progress, best Dice)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing picture")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.runplot import plot_run

    if args.smooth is not None and args.smooth < 1:
        from semisupseg.errors import InputError

        raise InputError(f"--smooth must be at least 1, got {args.smooth}")
    path = plot_run(args.run, args.output, overwrite=args.overwrite, width=args.width, smoothing=args.smooth,
                    title=args.title)
    print(f"chart written to {path}", file=sys.stderr)
    return 0
