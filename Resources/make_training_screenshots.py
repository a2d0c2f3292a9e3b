"""Make the pictures of the training panel (README, EXTENSION_SCREENSHOTURLS) from a real training run, with Slicer's
own slice views.

What it shows is what the SemiSupSegTraining panel shows while a run goes: a short ``sgrs`` run on the bundled
hippocampus sample data (2 labeled, 2 unlabeled, 2 validation scans; ``semisupseg train ... --overlay-case``) writes
overlay sets of one labeled and one unlabeled case; the panel's own loader (``SemiSupSegLib.live.OverlayLoader``)
puts the newest set into a headless Slicer scene (colour nodes and legends from ``SemiSupSegLib.colors``), and
``SemiSupSegLib.render`` draws axial slice views offscreen with ``vtkMRMLSliceLogic`` and the displayable managers,
the field of view fitted to the object: for the labeled case through the ground-truth ring's centre, for the
unlabeled case through the plane of the predicted object holding the most Θ voxels (the rarest region: tens of
voxels in a scan), so that all three regions show. A caption strip under each view names what is drawn, in the
colours drawn. The chart is ``semisupseg plot-run`` of the same run. Needs ``slicer-core``
(``pip install -e ".[test]"``).

Run from the repository root::

    python Resources/make_training_screenshots.py [--run RUN_DIR] [--iterations N] [--overwrite]

``--run``: use the run in RUN_DIR when it holds overlay sets of both cases, else train into it (kept); without
``--run`` the run goes to a temporary folder removed at the end. The run takes about 4 minutes on 2 busy CPU cores
(600 iterations, 8 base filters, 32 x 48 x 32 patches, one thread). Writes ``Resources/Screenshots/
training_sdm_ring.png``, ``training_regions.png`` and ``training_chart.png`` (existing ones only with
--overwrite).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "Resources" / "Screenshots"
HIPPOCAMPUS = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus"
LABELED_CASE = "hippocampus_008"  # labeled in the sample split (labeled_2)
UNLABELED_CASE = "hippocampus_015"  # unlabeled in it
RING_RGB = (1.0, 0.85, 0.0)  # the boundary ring's colour in the training panel (SemiSupSegLib.live)
OUTLINE_RGB = [(1.0, 1.0, 1.0), (0.35, 0.85, 1.0)]  # predicted classes' outlines on the regions: white, sky blue


def train_command(run_dir: Path, iterations: int) -> List[str]:
    """The ``semisupseg train`` child: SGRS-Net on the sample data, snapshots of both cases every 100 iterations."""
    return [sys.executable, "-m", "semisupseg", "train", "--method", "sgrs", "--labeled", str(HIPPOCAMPUS),
            "--split-labeled", "labeled_2", "--patch-size", "32", "48", "32", "--set", "model.n_filters=8",
            "--set", "num_threads=1", "--iterations", str(iterations), "--set", "val_every=50", "--seed", "0",
            "--overlay-case", LABELED_CASE, "--overlay-case", UNLABELED_CASE, "--overlay-every", "100",
            "--out", str(run_dir), "--no-bar"]


def train(run_dir: Path, iterations: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"training into {run_dir} ({iterations} iterations) ...", file=sys.stderr)
    subprocess.run(train_command(run_dir, iterations), check=True, env=env, cwd=str(REPO))


def has_overlays(run_dir: Path) -> bool:
    from semisupseg.training.snapshots import newest_set

    return all(newest_set(run_dir, case) is not None for case in (LABELED_CASE, UNLABELED_CASE))


# ----------------------------------------------------------------------------------------------------------------------
# slices
# ----------------------------------------------------------------------------------------------------------------------

def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def object_view(node, mask: np.ndarray, prefer: Optional[np.ndarray] = None, margin_mm: float = 4.0
                ) -> Tuple[float, Tuple[float, float, float], float]:
    """An axial slice through the object ``mask`` (z, y, x voxels of ``node``'s grid) and a field of view around
    it: ``(slice offset S in mm, view centre RAS, field of view in mm)``. The slice is, of the planes crossing the
    object, the one holding the most ``prefer`` voxels (if given and any), ties and the rest going to the plane
    nearest the object's centroid; the view is centred on the object's part in that plane and shows it whole, with
    ``margin_mm`` around it."""
    m = _ijk_to_ras(node)

    def ras_of(voxels: np.ndarray) -> np.ndarray:
        kji = np.argwhere(voxels).astype(np.float64)
        return (m @ np.c_[kji[:, ::-1], np.ones(len(kji))].T)[:3].T

    ras = ras_of(mask)
    spacing = min(node.GetSpacing())
    planes = np.unique(np.round(ras[:, 2] / (0.5 * spacing)) * (0.5 * spacing))
    centroid_s = ras[:, 2].mean()
    score = np.zeros(len(planes))
    if prefer is not None and prefer.any():
        s_prefer = ras_of(prefer)[:, 2]
        score = np.array([(np.abs(s_prefer - s) < 0.5 * spacing).sum() for s in planes], dtype=np.float64)
    best = planes[np.lexsort((np.abs(planes - centroid_s), -score))[0]]
    in_slice = ras[np.abs(ras[:, 2] - best) < 0.5 * spacing]
    lo, hi = in_slice.min(axis=0)[:2] - spacing / 2, in_slice.max(axis=0)[:2] + spacing / 2
    mid = (lo + hi) / 2
    return float(best), (float(mid[0]), float(mid[1]), float(best)), float((hi - lo).max() + 2 * margin_mm)


# ----------------------------------------------------------------------------------------------------------------------
# caption strips (the slice itself is Slicer's; the strip under it is drawn with the package's 5x7 font)
# ----------------------------------------------------------------------------------------------------------------------

def caption(width: int, lines: Sequence[Sequence[Tuple[str, object]]]) -> np.ndarray:
    """A dark strip of caption lines; each line is a list of ``(kind, value)``: ``("text", str)``, ``("box", rgb)``
    (a filled swatch), ``("ring", rgb)`` (an outline swatch), ``("ramp", [rgb, ...])`` (a colour bar)."""
    from semisupseg.preview import draw_text, text_size

    th = text_size("A")[0]
    pad, line_h = 10, th + 8
    strip = np.zeros((pad * 2 + line_h * len(lines), width, 3), dtype=np.uint8)
    strip[:] = (24, 24, 24)
    for n, line in enumerate(lines):
        y, x = pad + n * line_h, pad
        for kind, value in line:
            if kind == "text":
                x = draw_text(strip, y, x, str(value), (235, 235, 235)) + 6
            elif kind == "box":
                strip[y + 1:y + th - 1, x:x + th - 2] = _u8(value)
                x += th + 4
            elif kind == "ring":
                strip[y + 1:y + th - 1, x:x + th - 2] = _u8(value)
                strip[y + 4:y + th - 4, x + 3:x + th - 5] = (24, 24, 24)
                x += th + 4
            elif kind == "ramp":
                cols = np.array([_u8(c) for c in value])
                ramp = cols[np.linspace(0, len(cols) - 1, 90).round().astype(int)]
                strip[y + 1:y + th - 1, x:x + 90] = ramp[None]
                x += 96
    return strip


def _u8(rgb) -> Tuple[int, int, int]:
    return tuple(int(round(255 * float(c))) for c in rgb[:3])  # type: ignore[return-value]


def _color(color_node, index: int) -> Tuple[float, float, float]:
    rgba = [0.0, 0.0, 0.0, 0.0]
    color_node.GetColor(index, rgba)
    return tuple(rgba[:3])  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------------
# the pictures
# ----------------------------------------------------------------------------------------------------------------------

def render_pictures(run_dir: Path, size: Tuple[int, int], overwrite: bool) -> List[Path]:
    sys.path.insert(0, str(REPO / "SemiSupSeg"))
    from SemiSupSegLib.colors import color_node
    from SemiSupSegLib.headless import build_headless_slicer
    from SemiSupSegLib.live import OverlayLoader
    from SemiSupSegLib.render import SliceRenderer, write_png
    from SemiSupSegLib.results import show_segmentation

    from semisupseg.geometry import REGION_AGREE, REGION_DISAGREE, REGION_UNCERTAIN
    from semisupseg.io import read_volume
    from semisupseg.runplot import plot_run

    slicer = build_headless_slicer()
    scene = slicer.scene
    loader = OverlayLoader(scene, run_dir, "Training run")
    written: List[Path] = []
    with SliceRenderer(scene, size, app_logic=slicer.app_logic) as renderer:
        # --- labeled case: predicted SDM of the larger class and the ground truth's boundary ring around it
        manifest = loader.load(LABELED_CASE)
        image = slicer.load_volume(HIPPOCAMPUS / "imagesTr" / f"{LABELED_CASE}.nii.gz")
        files = {(f["kind"], f.get("class")): f for f in manifest["files"]}
        label = read_volume(HIPPOCAMPUS / "labelsTr" / f"{LABELED_CASE}.nii.gz").array
        c = max((k[1] for k in files if k[0] == "ring"), key=lambda v: int((label == v).sum()))
        ring = read_volume(files[("ring", c)]["path"])
        ring_seg = show_segmentation(scene, slicer.logic("Segmentations"), ring,
                                     ["outside", f"boundary ring M_bound ({files[('ring', c)]['class_name']})"],
                                     [0, 1], colors=[(0, 0, 0), RING_RGB], reference_node=image,
                                     name="boundary ring")
        offset, centre, fov = object_view(image, ring.array > 0)
        sdm_node = loader.nodes[(LABELED_CASE, "sdm", c)]
        rgb = renderer.render(image, sdm_node, 0.6, ring_seg, "Axial", offset, field_of_view=fov,
                              view_centre=centre)
        sdm_colors = color_node(scene, "sdm")
        ramp = [_color(sdm_colors, i) for i in range(0, 256, 8)]
        cls = files[("sdm", c)]["class_name"]
        text = [[("text", f"{LABELED_CASE} (labeled), iteration {manifest['iteration']}")],
                [("ramp", ramp), ("text", f"predicted SDM, {cls}")],
                [("text", "blue inside, white boundary, red outside")],
                [("ring", RING_RGB), ("text", "boundary ring M_bound (ground truth)")]]
        written.append(write_png(np.concatenate([rgb, caption(rgb.shape[1], text)]),
                                 OUT / "training_sdm_ring.png", overwrite=overwrite))

        # --- unlabeled case: SGRS regions (their colour table) and the predicted segmentation's outline
        manifest = loader.load(UNLABELED_CASE)
        image = slicer.load_volume(HIPPOCAMPUS / "imagesTr" / f"{UNLABELED_CASE}.nii.gz")
        files = {(f["kind"], f.get("class")): f for f in manifest["files"]}
        seg = read_volume(files[("segmentation", None)]["path"])
        names, values = manifest["class_names"], manifest["label_values"]
        seg_node = show_segmentation(scene, slicer.logic("Segmentations"), seg, names, values,
                                     colors=OUTLINE_RGB[: len(names) - 1], reference_node=image, name="prediction")
        regions = loader.nodes[(UNLABELED_CASE, "regions", None)]
        codes = read_volume(files[("regions", None)]["path"]).array
        # the plane with the most Θ voxels (rare: tens of voxels in a scan), so that all three regions show
        offset, centre, fov = object_view(image, seg.array > 0, prefer=codes == REGION_DISAGREE)
        rgb = renderer.render(image, regions, 0.45, seg_node, "Axial", offset, field_of_view=fov,
                              view_centre=centre)
        table = color_node(scene, "regions")
        text = [[("text", f"{UNLABELED_CASE} (unlabeled), iteration {manifest['iteration']}")],
                [("box", _color(table, REGION_UNCERTAIN)), ("text", "Δ uncertain"),
                 ("box", _color(table, REGION_AGREE)), ("text", "Ω confident, agree")],
                [("box", _color(table, REGION_DISAGREE)), ("text", "Θ confident, disagree")],
                [("text", "predicted")] + [item for i, n in enumerate(names[1:])
                                           for item in (("ring", OUTLINE_RGB[i]), ("text", n))]]
        written.append(write_png(np.concatenate([rgb, caption(rgb.shape[1], text)]),
                                 OUT / "training_regions.png", overwrite=overwrite))
    written.append(plot_run(run_dir, OUT / "training_chart.png", overwrite=overwrite))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder to use (trained into when it has no overlays yet)")
    parser.add_argument("--iterations", type=int, default=600, help="training iterations (default 600)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("W", "H"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if not args.overwrite:
        existing = [n for n in ("training_sdm_ring.png", "training_regions.png", "training_chart.png")
                    if (OUT / n).exists()]
        if existing:
            parser.error(f"{', '.join(existing)} exist in {OUT}; pass --overwrite to replace them")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="semisupseg-screenshots-") as tmp:
        run_dir = args.run if args.run is not None else Path(tmp) / "sgrs_hippocampus_sample"
        if not has_overlays(run_dir):
            train(run_dir, args.iterations)
        for path in render_pictures(run_dir, tuple(args.size), args.overwrite):
            print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
