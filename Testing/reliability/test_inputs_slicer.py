"""Bad inputs for the Slicer library (``SemiSupSeg/SemiSupSegLib``) on a real headless MRML scene (slicer-core):

* loading: every damaged file of the corpus through ``HeadlessSlicer.load_volume`` (Slicer's own readers): an
  :class:`InputError` naming the file, or a node Slicer could read — never another exception, and a refused file
  adds nothing to the scene;
* Segment (``SegmentLogic.start``) and *Add to labeled set* (``labeled_set.add_to_labeled_set``) given volume nodes
  holding what no scan should: NaN/Inf voxels, a constant image, one slice, vector voxels, no image data, a
  zero/NaN geometry. Each is refused with one line naming the volume before anything runs: the scene unchanged
  (same nodes, same modification times), no worker started, the labeled set unchanged byte for byte.

Skipped without slicer-core (failing instead when ``CI`` is set), like the other Slicer library tests.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from corpus import HIPPO, SCAN, SCAN_LABEL


REPO = Path(__file__).resolve().parents[2]


def _scene_state(scene):
    nodes = scene.GetNodes()
    return [(n.GetID(), n.GetClassName(), n.GetName(), n.GetMTime()) for n in
            (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ loading
def test_loading_every_damaged_file(headless, corpus):
    from semisupseg.errors import InputError

    tried = refused = 0
    for entry in corpus:
        if entry.kind not in ("image", "label") or entry.path.name.endswith(".h5"):  # Slicer reads no .h5
            continue
        before = entry.hashes()
        state = _scene_state(headless.scene)
        tried += 1
        try:
            node = headless.load_volume(entry.path)
        except InputError as exc:
            assert str(exc).startswith(f"{entry.path}: ") and "\n" not in str(exc), str(exc)
            assert _scene_state(headless.scene) == state, f"{entry.name}: the scene changed"
            refused += 1
        else:
            assert node is not None and node.GetImageData() is not None
            headless.scene.RemoveNode(node)
        assert entry.hashes() == before
    assert tried >= 50 and refused >= 20, (tried, refused)
    print(f"\nSlicer load: {tried} tried, {refused} refused by Slicer's readers, the rest read")


# ------------------------------------------------------------------------------------------------ bad volume nodes
def _bad_nodes(headless):
    """``(name, node, expected substring)``: volume nodes a user could have in the scene, made from the real scan."""
    import vtk

    from semisupseg.io import read_image
    from semisupseg.volume import Volume
    from SemiSupSegLib.scene import update_volume_node

    scan = read_image(SCAN)
    scene = headless.scene
    out = []
    nan = scan.array.copy()
    nan[10:12, 20:22, 15:17] = np.nan
    out.append(("nan voxels", update_volume_node(scene, scan.with_array(nan), name="nan"), "non-finite"))
    inf = scan.array.copy()
    inf[3, 3, 3] = -np.inf
    out.append(("inf voxel", update_volume_node(scene, scan.with_array(inf), name="inf"), "non-finite"))
    out.append(("constant", update_volume_node(scene, scan.with_array(np.full_like(scan.array, 7.0)),
                                               name="constant"), "constant"))
    out.append(("zeros", update_volume_node(scene, scan.with_array(np.zeros_like(scan.array)), name="zeros"),
                "constant"))
    one = Volume(scan.array[:1].copy(), scan.spacing, scan.origin, scan.direction)
    out.append(("one slice", update_volume_node(scene, one, name="one_slice"), "single slice"))
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no_data")
    out.append(("no image data", empty, "no image data"))
    vector = update_volume_node(scene, scan, name="vector")
    image = vtk.vtkImageData()
    image.SetDimensions(36, 48, 40)
    image.AllocateScalars(vtk.VTK_FLOAT, 3)
    vector.SetAndObserveImageData(image)
    out.append(("vector voxels", vector, "components"))
    zero = update_volume_node(scene, scan, name="zero_spacing")
    zero.SetSpacing(1.0, 0.0, 1.0)
    out.append(("zero spacing", zero, "spacing"))
    nan_origin = update_volume_node(scene, scan, name="nan_origin")
    nan_origin.SetOrigin(float("nan"), 0.0, 0.0)
    out.append(("NaN origin", nan_origin, "origin"))
    return out


def test_segment_refuses_bad_volume_nodes_before_anything_runs(headless, tiny_model_file, tmp_path):
    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.errors import InputError
    from SemiSupSegLib.segment_logic import SegmentLogic, SegmentRequest

    class NoWorker:  # start() must refuse before it asks for the worker: any use of it fails the test
        def __getattr__(self, name):
            raise AssertionError(f"the worker was used ({name}) for a refused input")

    logic = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path),
                         worker=NoWorker())
    cases = _bad_nodes(headless)
    for what, node, expect in cases:
        state = _scene_state(headless.scene)
        with pytest.raises(InputError) as ei:
            logic.start(SegmentRequest(node, str(tiny_model_file), overlays=()))
        message = str(ei.value)
        assert expect in message and node.GetName() in message and "\n" not in message, (what, message)
        assert _scene_state(headless.scene) == state, f"{what}: the scene changed"
        assert logic.job is None
    print(f"\nSlicer segment: {len(cases)} bad volume nodes tried, {len(cases)} refused")


def test_add_to_labeled_set_refuses_bad_volumes_and_places(headless, tmp_path):
    from semisupseg.errors import InputError
    from semisupseg.io import read_label
    from SemiSupSegLib.labeled_set import add_to_labeled_set
    from SemiSupSegLib.results import show_segmentation

    root = tmp_path / "hippocampus"
    shutil.copytree(HIPPO, root)
    before = _digest(root)
    seg_logic = headless.logic("Segmentations")
    labels = read_label(SCAN_LABEL)
    good_node = headless.load_volume(SCAN)
    seg = show_segmentation(headless.scene, seg_logic, labels, ["background", "Anterior", "Posterior"], [0, 1, 2],
                            reference_node=good_node)
    tried = 0
    for what, node, expect in _bad_nodes(headless):
        tried += 1
        state = _scene_state(headless.scene)
        with pytest.raises(InputError) as ei:
            add_to_labeled_set(headless.scene, seg_logic, node, seg, root)
        message = str(ei.value)
        assert expect in message and "\n" not in message, (what, message)
        assert _digest(root) == before, f"{what}: the labeled set changed"
        assert _scene_state(headless.scene) == state, f"{what}: the scene changed"

    # places that cannot take a case: a file, a folder under a file, an LA-layout set, a set without classes
    blocker = tmp_path / "a_file"
    blocker.write_text("x\n")
    la = tmp_path / "la" / "CASE1"
    la.mkdir(parents=True)
    shutil.copy(REPO / "Testing" / "data" / "la_crop" / "mri_norm2.h5", la / "mri_norm2.h5")
    no_classes = tmp_path / "no_classes"
    shutil.copytree(HIPPO, no_classes)
    (no_classes / "dataset.json").unlink()
    for place, expect in ((blocker, "folder"), (blocker / "sub", "folder"), (la.parent, "LA layout"),
                          (no_classes, "classes")):
        tried += 1
        snapshot = _digest(place) if place.is_dir() else None
        with pytest.raises(InputError) as ei:
            add_to_labeled_set(headless.scene, seg_logic, good_node, seg, place)
        assert expect in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
        assert snapshot is None or _digest(place) == snapshot
    assert blocker.read_text() == "x\n"
    print(f"\nSlicer add-to-labeled-set: {tried} bad inputs tried, {tried} refused")
