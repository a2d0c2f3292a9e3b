"""``semisupseg segment IMAGE... --model MODEL -o OUTDIR``: segment images with a trained model.

Outputs per case (``<case>`` is the file name without its suffix; for the LA release's ``<ID>/mri_norm2.h5`` it is
the folder name ``<ID>``), in the input image's exact geometry, format by ``--output-suffix``:

* ``<case>_label<suffix>``: the label map with the model card's label values (``.seg.nrrd`` gets 3D Slicer segment
  names);
* ``--prob``: ``<case>_prob<suffix>``, the probabilities of the **foreground** classes (the background is
  ``1 - sum``): a scalar volume for a binary model, else a multi-component (vector) image whose component ``i`` is
  class ``i + 1`` of the card;
* ``--sdm``: ``<case>_sdm<suffix>``, the signed distance map (negative inside, in [-1, 1]), same component layout:
  the network's SDM head, or for a model without one the SDM of the predicted segmentation (a note says so);
* ``--entropy``: ``<case>_entropy<suffix>``, the voxel entropy of the class probabilities (nats);
* ``<case>_warnings.txt``, only when the scan lies far outside what the model was trained on (physical extent many
  times the training scans, voxel size or intensities far off; also printed, one line) or ``--layout whole`` fell
  back to windows.

Inputs: image files, DICOM series folders, LA ``<ID>`` folders holding ``mri_norm2.h5``, and folders of images
(every image in them, or in their ``imagesTr/``/``imagesTs/``; ``<case>_0000``, ``_0001``... files are one case's
channels), after the files named one by one.

Existing outputs are never replaced without ``--overwrite`` (checked for every case before any work starts), and an
input scan never, even with it (e.g. ``a.nii.gz`` and ``a_label.nii.gz`` segmented into their own folder).
``--skip-existing`` continues an interrupted batch: the cases whose outputs all exist are skipped, the others
segmented (a case cut off between its outputs is done again, its earlier outputs replaced).
A case that fails (an unreadable or refused image, out of memory) is reported on its own line and leaves no outputs;
the other cases are still segmented, and the command ends with one line listing the failures and exit code 2 (with
``--json-progress``: a ``failed`` event per case and a final ``summary`` event). With a single input its error is
the command's error. The hidden temporary files a killed earlier run left beside a case's outputs are removed when
that case is written.
With a model of ``k > 1`` input channels, give the images in groups of ``k`` consecutive paths (one case each).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from semisupseg.cli.parser import add_threads_option, apply_threads

AXIS_INDEX_ZYX = {"z": 0, "y": 1, "x": 2}


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "segment", help="segment images with a trained model (labels, probabilities, SDM, entropy)",
        description="Segment one or more images (NIfTI/NRRD/MHA/DICOM folder/LA .h5) with a SemiSupSeg model file. "
                    "Outputs are written in each input's geometry as <case>_label, _prob, _sdm, _entropy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="input images (groups of k for k-channel models), DICOM series folders, or folders of "
                        "images (every image inside, or inside their imagesTr/ or imagesTs/)")
    p.add_argument("--model", "-m", required=True,
                   help="model file (.pt), a training run's folder (its best.pt) or the name of a catalogued "
                        "model ('semisupseg models' lists them)")
    p.add_argument("--output", "-o", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    p.add_argument("--prob", action="store_true",
                   help="also write the foreground class probabilities (<case>_prob: a scalar volume for a binary "
                        "model, else a vector image, component i = class i+1; background = 1 - sum)")
    p.add_argument("--sdm", action="store_true",
                   help="also write the SDM, negative inside (<case>_sdm, same layout): the network's SDM head, or "
                        "for a model without one the SDM of the predicted segmentation (a note says so)")
    p.add_argument("--entropy", action="store_true", help="also write the voxel entropy (uncertainty)")
    p.add_argument("--keep-largest", action=argparse.BooleanOptionalAction, default=None,
                   help="keep only the largest connected component of each class (the papers' post-processing); "
                        "default: what the model card recommends ('semisupseg info MODEL', 'inference:')")
    p.add_argument("--layout", choices=("default", "papers", "whole"), default="default",
                   help="window layout: default (--overlap, --blend), papers (strides 18,18,4 voxels, uniform "
                        "averaging, as the reference releases' test code) or whole (the padded image as one "
                        "window: fastest on CPU, more context than in training; a scan above 4,000,000 padded "
                        "voxels is segmented with the default windows instead, and the output says so)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction (default layout)")
    p.add_argument("--blend", choices=("gaussian", "constant"), default="gaussian",
                   help="blending of overlapping windows (default layout)")
    p.add_argument("--tta", nargs="*", choices=("x", "y", "z"), default=None, metavar="AXIS",
                   help="flip test-time augmentation (2^n passes per window) over these axes; with no axis "
                        "given, over the flips the model was trained on (its card's augmentation); flips it was "
                        "not trained on are left out with a note")
    p.add_argument("--roi", nargs=6, type=int, default=None, metavar=("X0", "X1", "Y0", "Y1", "Z0", "Z1"),
                   help="segment only this voxel box of the input (x, y, z ranges, stop exclusive)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="disable the fast path (channels_last_3d + bf16 autocast, which is used only when its "
                        "labels agree with fp32 on a probe window)")
    p.add_argument("--output-suffix", default=".nii.gz",
                   choices=(".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"),
                   help="output format (.seg.nrrd: the label map as a Slicer segmentation, maps as .nrrd)")
    p.add_argument("--h5-spacing", type=float, default=0.625, help="voxel size (mm) of .h5 inputs (LA release)")
    p.add_argument("--series", default=None, metavar="UID",
                   help="DICOM folder inputs holding several series: read the series with this SeriesInstanceUID "
                        "(the error for such a folder lists them)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip the cases whose outputs all exist (continue an interrupted batch); a case with only "
                        "some of them is segmented again")
    add_threads_option(p)
    p.add_argument("--stop-file", default=None,
                   help="cancel cleanly when this file appears (for GUIs running the command in a process)")
    p.add_argument("--json-progress", action="store_true",
                   help="print progress and results as JSON lines on stdout instead of a progress bar")
    p.set_defaults(func=run)


def case_name(path: Path) -> str:
    """Output stem of an input: file name without its volume suffix; ``<ID>/mri_norm2.h5`` → ``<ID>``."""
    from semisupseg.io import strip_suffix, volume_suffix

    stem = strip_suffix(path)
    if volume_suffix(path) in (".h5", ".hdf5") and stem == "mri_norm2" and path.parent.name:
        return path.resolve().parent.name
    return stem


#: what ``segment`` appends to a case's name for its outputs (``<case>_label.nii.gz``...)
OUTPUT_KINDS = ("label", "prob", "sdm", "entropy")


def output_paths(case: str, outdir: Path, suffix: str, prob: bool, sdm: bool, entropy: bool) -> Dict[str, Path]:
    """The files ``segment`` writes for ``case`` (label always; the others when asked)."""
    map_suffix = ".nrrd" if suffix == ".seg.nrrd" else suffix
    paths = {"labels": outdir / f"{case}_label{suffix}"}
    if prob:
        paths["probabilities"] = outdir / f"{case}_prob{map_suffix}"
    if sdm:
        paths["sdm"] = outdir / f"{case}_sdm{map_suffix}"
    if entropy:
        paths["entropy"] = outdir / f"{case}_entropy{map_suffix}"
    return paths


def warnings_path(case: str, outdir: Path) -> Path:
    """``<case>_warnings.txt``: written beside the outputs when the scan lies far outside the training data (one
    line per finding, :func:`semisupseg.data.fingerprint.domain_warnings`) or the layout had to change."""
    return outdir / f"{case}_warnings.txt"


def _image_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of images to segment one by one (not a DICOM series, not an LA ``<ID>``
    folder): it holds image files, or an ``imagesTr``/``imagesTs`` folder."""
    from semisupseg.io import list_volume_files

    if not path.is_dir() or (path / "mri_norm2.h5").is_file():
        return False
    return bool(list_volume_files(path)) or any((path / sub).is_dir() for sub in ("imagesTr", "imagesTs"))


def _group_cases(images: List[str], in_channels: int) -> List[Tuple[str, List[Path]]]:
    from semisupseg.data.cases import discover_unlabeled
    from semisupseg.errors import InputError

    given = [Path(p) for p in images]
    folders = [p for p in given if _image_folder(p)]  # each folder listed once
    paths = [p / "mri_norm2.h5" if p.is_dir() and (p / "mri_norm2.h5").is_file() else p
             for p in given if p not in folders]
    if len(paths) % in_channels:
        raise InputError(f"the model takes {in_channels} channels: give the images in groups of {in_channels} "
                         f"(got {len(paths)} paths)")
    groups = [paths[i:i + in_channels] for i in range(0, len(paths), in_channels)]
    cases = [(case_name(g[0]), g) for g in groups]
    for folder in folders:
        found = discover_unlabeled(folder)
        ids = {c.case_id for c in found}
        for case in found:
            base, _, kind = case.case_id.rpartition("_")
            if kind in OUTPUT_KINDS and base in ids:  # an earlier run's output beside its scan, not a scan
                continue
            if len(case.channel_paths) != in_channels:
                raise InputError(f"case {case.case_id} has {len(case.channel_paths)} channel file(s) in this folder; "
                                 f"the model takes {in_channels}", folder)
            cases.append((case.case_id, list(case.channel_paths)))
    seen: Dict[str, Tuple[str, Path]] = {}
    for name, g in cases:  # "Case1" and "case1" are one output file on Windows' and macOS's disks
        if name.casefold() in seen:
            other, first = seen[name.casefold()]
            same = "the same case name" if other == name else f"case names that differ only in case ({other!r})"
            raise InputError(f"two inputs give {same} {name!r} ({first} and {g[0]}); segment them into different "
                             "output folders", g[0])
        seen[name.casefold()] = (name, g[0])
    return cases


def read_input(path: Path, args: argparse.Namespace):
    """One input image as ``segment`` reads it: ``.h5`` with ``--h5-spacing``, a DICOM folder's series chosen by
    ``--series`` (a folder holding several without it is refused with their ids and the option to use)."""
    from semisupseg.errors import InputError
    from semisupseg.io import SeriesChoiceError, read_image, read_image_or_h5

    if not path.is_dir():
        return read_image_or_h5(path, h5_spacing=(args.h5_spacing,) * 3)
    try:
        return read_image(path, series_id=getattr(args, "series", None))
    except SeriesChoiceError as exc:
        listed = ", ".join(f"{i} ({n} slices)" for i, n in exc.series.items())
        raise InputError(f"folder holds {len(exc.series)} DICOM series ({listed}); choose one with --series UID",
                         path) from None


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import load_model
    from semisupseg.errors import (CASE_ERRORS, BatchError, Cancelled, InputError, OutputExistsError,
                                   case_error_line)
    from semisupseg.inference import SegmentOptions, tta_axes_for_model
    from semisupseg.progress import CancelToken

    apply_threads(args.threads)
    model_path = resolve_model(args.model)
    model, card = load_model(model_path, device="cpu")
    if args.sdm and not card.network.get("sdm_head", False):
        print(f"note: {model_path}: this model has no SDM head ({card.method}); <case>_sdm is the signed distance "
              f"map of its predicted segmentation", file=sys.stderr)
    tta: tuple = ()
    if args.tta is not None:
        requested = None if not args.tta else [AXIS_INDEX_ZYX[a] for a in args.tta]
        tta, dropped = tta_axes_for_model(card, requested)
        names = {v: k for k, v in AXIS_INDEX_ZYX.items()}
        if dropped or not tta:
            which = " ".join(names[a] for a in dropped) if dropped else "any axis"
            aug = (card.training or {}).get("augmentation", "papers")
            print(f"note: the model was not trained on flips of {which} (augmentation {aug!r}); flip TTA "
                  f"{'uses ' + ' '.join(names[a] for a in tta) if tta else 'is off'}", file=sys.stderr)
    roi = None
    if args.roi is not None:
        x0, x1, y0, y1, z0, z1 = args.roi
        roi = ((z0, z1), (y0, y1), (x0, x1))
    options = SegmentOptions(layout=args.layout, overlap=args.overlap, blend=args.blend, batch_size=args.batch_size,
                             device=args.device, fast=args.fast, tta_axes=tta, roi=roi,
                             keep_largest=args.keep_largest, compute_sdm=args.sdm, compute_entropy=args.entropy)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise InputError("output exists and is not a folder", outdir)
    cases = _group_cases(args.images, int(card.in_channels))
    for _, group in cases:
        for p in group:
            if not p.exists():
                raise InputError("input not found", p)
    plans = [(name, group, output_paths(name, outdir, args.output_suffix, args.prob, args.sdm, args.entropy))
             for name, group in cases]
    inputs = {p.resolve(): p for _, group in cases for p in group}
    for name, _, outs in plans:  # even with --overwrite: it replaces earlier outputs, never the scans read
        for p in list(outs.values()) + [warnings_path(name, outdir)]:
            if p.resolve() in inputs:
                raise InputError(f"the output of case '{name}' would replace this input scan: choose another output "
                                 "folder (-o) or --output-suffix", inputs[p.resolve()])
    if args.skip_existing and not args.overwrite:
        done = [plan for plan in plans if all(p.exists() for p in plan[2].values())]
        if done:
            print(f"note: skipping {len(done)} of {len(plans)} case(s) whose outputs exist (--skip-existing)",
                  file=sys.stderr)
        plans = [plan for plan in plans if plan not in done]
        args.overwrite = True  # a remaining case's outputs are those of the interrupted run: they are replaced
    elif not args.overwrite:
        for name, _, outs in plans:
            for p in list(outs.values()) + [warnings_path(name, outdir)]:
                if p.exists():
                    raise OutputExistsError("output exists; pass --overwrite to replace it, or --skip-existing to "
                                            "segment only the cases without outputs", p)
    cancel = CancelToken(args.stop_file)

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)

    failures: List[Tuple[str, str]] = []  # (case, one line): a bad file does not stop the others
    for index, (name, group, outs) in enumerate(plans):
        case_files = list(outs.values()) + [warnings_path(name, outdir)]
        existed = {p for p in case_files if p.exists()}
        try:
            _segment_case(args, index, name, group, outs, plans, model, card, options, tta, cancel, emit, outdir)
        except Cancelled:
            raise
        except CASE_ERRORS as exc:
            if len(plans) == 1:
                raise  # one input: its error is the command's error
            line = case_error_line(exc, group[0])
            failures.append((name, line))
            for p in case_files:  # no half set of outputs for it
                if p not in existed and p.exists():
                    p.unlink()
            if args.json_progress:
                emit({"event": "failed", "case": name, "index": index, "cases": len(plans), "error": line})
            else:
                print(f"failed: {name}: {line} (going on with the other cases)", file=sys.stderr)
        finally:
            gc.collect()  # the case's arrays go now, not at some later collection: memory stays flat over a batch
    if failures:
        if args.json_progress:
            emit({"event": "summary", "cases": len(plans), "failed": [{"case": c, "error": e} for c, e in failures]})
        raise BatchError.of(failures, len(plans), "the others were segmented")
    return 0


def _segment_case(args, index, name, group, outs, plans, model, card, options, tta, cancel, emit, outdir) -> None:
    """Read, segment and write one case of :func:`run`."""
    import numpy as np

    from semisupseg.cli.console import Progress
    from semisupseg.data.fingerprint import domain_warnings
    from semisupseg.fileio import remove_stale_temps, write_text_atomic
    from semisupseg.inference import segment
    from semisupseg.io import check_not_constant, write_segmentation, write_volume

    volumes = [read_input(p, args) for p in group]
    check_not_constant(volumes[0], group[0])
    warnings = domain_warnings(volumes[0], card)  # far outside the training data: say so, keep it with outputs
    if warnings:
        from semisupseg.cli.models import training_summary

        print(f"warning: {name}: " + "; ".join(warnings), file=sys.stderr)
        trained_on = training_summary(card)
        if trained_on:  # what the model is for: the labels of another anatomy are likely meaningless
            print(f"note: {name}: the model was trained on {trained_on}; its labels for a scan unlike these are "
                  "likely meaningless", file=sys.stderr)
    bar: Optional[Progress] = None
    if args.json_progress:
        emit({"event": "case", "case": name, "index": index, "cases": len(plans)})

        def progress(fraction: float, message: str = "", _name: str = name) -> None:
            emit({"event": "progress", "case": _name, "fraction": round(float(fraction), 4),
                  "message": message})
    else:  # a bar on a terminal, plain lines in a log (no carriage returns)
        bar = progress = Progress(f"[{index + 1}/{len(plans)}] {name}")
    try:
        result = segment(volumes, model, card, options, progress=progress, cancel=cancel)
    finally:
        if bar is not None:
            bar.close()
    written = {}
    outdir.mkdir(parents=True, exist_ok=True)  # only now: a refused input leaves no empty output folder
    # temporary files of this case's outputs that a killed earlier run left (its writes never reached the rename)
    remove_stale_temps(outdir, [p.name for p in outs.values()] + [warnings_path(name, outdir).name])
    written["labels"] = write_segmentation(result.labels, outs["labels"], class_names=card.class_names,
                                           label_values=card.label_values, overwrite=args.overwrite)
    if "probabilities" in outs:
        fg = result.probabilities.array[1:]
        written["probabilities"] = write_volume(result.probabilities.with_array(fg[0] if len(fg) == 1 else fg),
                                                outs["probabilities"], overwrite=args.overwrite)
    if "sdm" in outs and result.sdm is not None:
        sdm = result.sdm.array
        written["sdm"] = write_volume(result.sdm.with_array(sdm[0] if len(sdm) == 1 else sdm), outs["sdm"],
                                     overwrite=args.overwrite)
    if "entropy" in outs and result.entropy is not None:
        written["entropy"] = write_volume(result.entropy, outs["entropy"], overwrite=args.overwrite)
    counts = {card.class_names[i]: int(np.count_nonzero(result.labels.array == v))
              for i, v in enumerate(card.label_values) if i > 0}
    info = result.info
    if args.layout == "whole" and info.get("layout") != "whole":
        grid = " x ".join(str(s) for s in reversed(info.get("model_grid_zyx") or []))
        from semisupseg.inference import sliding_window

        note = (f"--layout whole: the scan ({grid} voxels on the model's grid, padded) is above its cap of "
                f"{sliding_window.WHOLE_MAX_VOXELS:,} voxels; segmented with the default windows")
        warnings.append(note)
        print(f"note: {name}: {note}", file=sys.stderr)
    if warnings:
        written["warnings"] = write_text_atomic("\n".join(warnings) + "\n", warnings_path(name, outdir),
                                                overwrite=args.overwrite)
    elif warnings_path(name, outdir).exists():  # --overwrite: a stale note of an earlier run must not stay
        warnings_path(name, outdir).unlink()
    if args.json_progress:
        emit({"event": "done", "case": name, "outputs": {k: str(v) for k, v in written.items()},
              "voxels": counts, "seconds": round(info["total_seconds"], 3), "windows": info["windows"],
              "precision": info["precision"], "tta_axes": "".join("zyx"[a] for a in tta),
              "layout": info.get("layout"), "keep_largest": info.get("keep_largest"), "warnings": warnings})
    else:
        print(f"{name}: {info['windows']} windows ({info['precision']}"
              + (", largest component per class" if info.get("keep_largest") else "")
              + f"), {info['total_seconds']:.1f} s; "
              + ", ".join(f"{k} {v} voxels" for k, v in counts.items()) + f" -> {written['labels']}",
              file=sys.stderr)
