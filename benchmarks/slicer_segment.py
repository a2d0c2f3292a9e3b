"""Click-to-scene time of the Slicer module's Segment action next to ``semisupseg segment`` on the same file.

"Click-to-scene" is the Segment action of ``SemiSupSegLib.segment_logic`` on a real MRML scene (slicer-core): the
input volume node goes to the warm ``semisupseg worker``, inference runs there, and the segmentation node and the SDM
and entropy overlays are in the scene when the call returns. Next to it, in the same loop (so both see the same
machine load), a fresh ``semisupseg segment`` process on the same file with the same outputs. The issue's bound is
click-to-scene <= 1.2 x inference + 1 s.

Usage (needs the test extra for slicer-core)::

    python benchmarks/slicer_segment.py [--model MODEL] [--scan FILE.h5|.nii.gz] [--repeats 4]

Default model: a V-Net n_filters 16 with an SDM head and random weights at the LA spacing (timing only); default
scan: the first full-resolution LA ``mri_norm2.h5`` of ``../shared/data/LA/h5``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SemiSupSeg"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--scan", default=None)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args(argv)

    import torch

    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.io import read_image_or_h5
    from semisupseg.nets import VNet, VNetConfig
    from SemiSupSegLib.headless import build_headless_slicer
    from SemiSupSegLib.scene import update_volume_node
    from SemiSupSegLib.segment_logic import SegmentLogic, SegmentRequest

    tmp = Path(tempfile.mkdtemp(prefix="slicer-segment-bench-"))
    if args.model is None:
        torch.manual_seed(0)
        model = VNet(VNetConfig(n_filters=16, num_classes=2, sdm_head=True)).eval()
        card = make_card(model, method="random-weights", spacing_xyz=(0.625,) * 3, patch_size_xyz=(112, 112, 80),
                         class_names=["background", "left atrium"])
        model_path = save_model(tmp / "la_n16.pt", model, card)
    else:
        model_path = Path(args.model)
    scan = Path(args.scan) if args.scan else sorted((REPO.parent / "shared" / "data" / "LA" / "h5").glob(
        "*/mri_norm2.h5"))[0]
    image = read_image_or_h5(scan)
    print(f"scan {scan.parent.name}/{scan.name} {image.shape_zyx}, load {os.getloadavg()[0]:.1f}", flush=True)
    hs = build_headless_slicer()
    node = update_volume_node(hs.scene, image, name="scan")
    logic = SegmentLogic(hs.scene, hs.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp))
    t = time.monotonic()
    logic.warm_up()
    print(f"worker start {time.monotonic() - t:.1f} s", flush=True)
    rows = []
    try:
        for r in range(args.repeats):
            t = time.monotonic()
            out = logic.segment(SegmentRequest(node, str(model_path), overlays=("sdm", "entropy")), timeout=1800)
            wall = time.monotonic() - t
            inference = float(out.timings.get("segment_s"))
            t = time.monotonic()
            res = subprocess.run([sys.executable, "-m", "semisupseg", "segment", str(scan), "--model", str(model_path),
                                  "-o", str(tmp / f"cli{r}"), "--sdm", "--entropy", "--json-progress"],
                                 capture_output=True, text=True, cwd=str(REPO))
            cli_wall = time.monotonic() - t
            done = [e for e in (json.loads(line) for line in res.stdout.splitlines() if line.startswith("{"))
                    if e.get("event") == "done"][0]
            rows.append((wall, inference, cli_wall, float(done["seconds"])))
            print(f"click-to-scene {wall:.2f} s (inference {inference:.2f} s); fresh CLI {cli_wall:.2f} s "
                  f"(inference {done['seconds']:.2f} s)", flush=True)
    finally:
        logic.close()
    med = [statistics.median(c) for c in zip(*rows)]
    print("\n| path | wall (median) | inference | outside inference |\n|---|---|---|---|")
    print(f"| Segment action (warm worker -> scene) | {med[0]:.2f} s | {med[1]:.2f} s | {med[0] - med[1]:.2f} s |")
    print(f"| fresh `semisupseg segment` process | {med[2]:.2f} s | {med[3]:.2f} s | {med[2] - med[3]:.2f} s |")
    print(f"\nbound 1.2 x inference + 1 s = {1.2 * med[1] + 1:.2f} s: {'met' if med[0] <= 1.2 * med[1] + 1 else 'MISSED'}"
          f"; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
