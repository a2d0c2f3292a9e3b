"""Make the extension's screenshots (EXTENSION_SCREENSHOTURLS, README pictures) with Slicer's own slice views.

What it does is what a click on *Segment* does, headless: a bundled real scan is loaded by Slicer's reader, the
Segment action (``SemiSupSegLib.segment_logic``) runs the model in the background worker and puts the segmentation
and the SDM / entropy overlays into the scene, and ``SemiSupSegLib.render`` draws axial slice views offscreen with
``vtkMRMLSliceLogic`` and the displayable managers. Needs ``slicer-core`` (``pip install -e ".[test]"``).

Run from the repository root::

    python Resources/make_screenshots.py [--model NAME_OR_PATH] [--scan FILE] [--overwrite]

Default model: the shipped ``hippocampus`` model (MODELS.md); default scan: the bundled hippocampus case
``hippocampus_011`` (in the test split: the model never saw it). Writes
``Resources/Screenshots/segmentation.png``, ``sdm.png`` and ``entropy.png`` (existing ones only with --overwrite).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "Resources" / "Screenshots"
DEFAULT_MODEL = "hippocampus"  # the shipped model (catalogue name)
DEFAULT_SCAN = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus" / "imagesTr" / "hippocampus_011.nii.gz"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="catalogue name or model file")
    parser.add_argument("--scan", default=str(DEFAULT_SCAN), help="scan to segment")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("W", "H"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "SemiSupSeg"))
    from SemiSupSegLib.headless import build_headless_slicer
    from SemiSupSegLib.render import render_slice
    from SemiSupSegLib.segment_logic import SegmentLogic, SegmentRequest

    slicer = build_headless_slicer()
    scan = slicer.load_volume(args.scan)
    logic = SegmentLogic(slicer.scene, slicer.logic("Segmentations"))
    try:
        outcome = logic.segment(SegmentRequest(scan, args.model, overlays=("sdm", "entropy")), timeout=1800)
    finally:
        logic.close()
    OUT.mkdir(parents=True, exist_ok=True)
    shots = [("segmentation.png", None, 0.0), ("entropy.png", outcome.overlay_nodes.get("entropy"), 0.6)]
    sdm_nodes = [outcome.overlay_nodes[k] for k in sorted(outcome.overlay_nodes) if k.startswith("sdm:")]
    if sdm_nodes:
        # the SDM of the class the shown slice cuts most: most pixels on its inside (blue over red)
        import tempfile

        import SimpleITK as sitk

        def inside_pixels(node) -> int:
            with tempfile.TemporaryDirectory() as tmp:
                png = render_slice(slicer.scene, scan, Path(tmp) / "probe.png", foreground_node=node,
                                   foreground_opacity=0.6, size=tuple(args.size), app_logic=slicer.app_logic)
                rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(png))).astype(int)
            return int(((rgb[..., 2] - rgb[..., 0]) > 30).sum())

        shots.insert(1, ("sdm.png", max(sdm_nodes, key=inside_pixels), 0.6))
    for name, overlay, opacity in shots:
        path = render_slice(slicer.scene, scan, OUT / name, foreground_node=overlay, foreground_opacity=opacity,
                            segmentation_node=outcome.segmentation_node, size=tuple(args.size),
                            segmentation_fill=overlay is None, overwrite=args.overwrite, app_logic=slicer.app_logic)
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
