"""The Segment action end to end on a real scene: a bundled real scan loaded by Slicer's own reader, the bundled
test model (SemiSupSeg/Resources/Testing, see its README), inference in the warm worker child process, results in
the scene — compared with ``semisupseg segment`` on the same file (identical labels and geometry, same SDM and
entropy), overlays present and reused, ROI, cancel and failures leaving the scene as it was."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slicer_guard import SAMPLE_DATA, require_slicer

require_slicer()

from semisupseg.catalogue import ModelCatalogue  # noqa: E402
from semisupseg.checkpoint import read_card  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402
from semisupseg.io import read_volume  # noqa: E402
from semisupseg.metrics import dice  # noqa: E402
from SemiSupSegLib import segment_logic as sl  # noqa: E402
from SemiSupSegLib.parameters import SegmentParameters  # noqa: E402
from SemiSupSegLib.results import labels_from_segmentation  # noqa: E402
from SemiSupSegLib.runner import WorkerClient  # noqa: E402
from SemiSupSegLib.segment_logic import (SegmentCancelled, SegmentError, SegmentLogic, SegmentRequest,  # noqa: E402
                                         device_note, status_text)

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"
SCAN = SAMPLE_DATA / "hippocampus" / "imagesTr" / "hippocampus_023.nii.gz"
LABEL = SAMPLE_DATA / "hippocampus" / "labelsTr" / "hippocampus_023.nii.gz"
LA_SCAN = next((SAMPLE_DATA / "la" / "imagesTr").glob("*.nii.gz"))


@pytest.fixture(scope="module")
def worker():
    """One warm worker for the whole file (its start-up, importing torch, is the slow part)."""
    client = WorkerClient(threads=1)
    yield client
    client.close()


@pytest.fixture
def logic(headless, worker, tmp_path):
    return SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path),
                        worker=worker)


def _scene_state(scene):
    nodes = scene.GetNodes()
    return [(n.GetID(), n.GetClassName(), n.GetName(), n.GetMTime()) for n in
            (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))]


def _geometry(volume):
    return np.concatenate([np.asarray(volume.spacing, float), np.asarray(volume.origin, float),
                           np.asarray(volume.direction, float).ravel()])


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """``semisupseg segment`` on the same file, in its own process (the reference the panel must equal)."""
    out = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "semisupseg", "segment", str(SCAN), "--model", str(MODEL), "-o", str(out),
           "--sdm", "--entropy", "--prob", "--output-suffix", ".nrrd"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return {kind: read_volume(out / f"hippocampus_023_{kind}.nrrd", allow_channels=True)
            for kind in ("label", "sdm", "entropy", "prob")}


@pytest.mark.slow
def test_segment_equals_the_command_line(headless, logic, cli_outputs):
    card = read_card(MODEL)
    scan = headless.load_volume(SCAN)
    before = (scan.GetImageData().GetMTime(), scan.GetModifiedSinceRead())
    progress = []
    outcome = logic.segment(SegmentRequest(scan, str(MODEL), overlays=("sdm", "entropy", "probability")),
                            timeout=300, on_progress=lambda f, m, eta: progress.append(f))
    # the input's voxels are never touched, and it is not marked for saving (a node reference to its results is
    # all that is added to it, see segment_logic.OVERLAYS_ROLE)
    assert (scan.GetImageData().GetMTime(), scan.GetModifiedSinceRead()) == before == (before[0], False)
    seg = outcome.segmentation_node
    segmentation = seg.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == list(card.class_names[1:])
    # the segmentation's labelmap, exported by Slicer, equals the command line's label file: labels and geometry
    exported = labels_from_segmentation(headless.scene, headless.logic("Segmentations"), seg, scan)
    reference = cli_outputs["label"]
    assert exported.array.shape == reference.array.shape
    np.testing.assert_array_equal(exported.array, reference.array)
    np.testing.assert_allclose(_geometry(exported), _geometry(reference), atol=1e-5)
    # a meaningful segmentation of the real scan (the tiny model's held-out Dice is in its README)
    truth = read_volume(LABEL).array
    for value in card.label_values[1:]:
        assert dice(exported.array == value, truth == value) > 0.5
    # overlays: one SDM and one probability per foreground class, entropy; the command line's values
    assert sorted(outcome.overlay_nodes) == sorted(["entropy"] + [f"{k}:{c}" for k in ("sdm", "probability")
                                                                  for c in card.class_names[1:]])
    from SemiSupSegLib.scene import volume_from_node

    for i, cls in enumerate(card.class_names[1:]):
        sdm = volume_from_node(outcome.overlay_nodes[f"sdm:{cls}"])
        np.testing.assert_allclose(sdm.array, cli_outputs["sdm"].array[i], atol=1e-5)
        np.testing.assert_allclose(_geometry(sdm), _geometry(reference), atol=1e-5)
        prob = volume_from_node(outcome.overlay_nodes[f"probability:{cls}"])
        np.testing.assert_allclose(prob.array, cli_outputs["prob"].array[i], atol=1e-5)
    entropy = volume_from_node(outcome.overlay_nodes["entropy"])
    np.testing.assert_allclose(entropy.array, cli_outputs["entropy"].array, atol=1e-5)
    assert outcome.overlay_nodes["entropy"].GetName() == f"{scan.GetName()} entropy"
    assert progress and progress[-1] == 1.0 and outcome.seconds > 0 and outcome.timings["total_s"] > 0
    assert outcome.voxels == {c: int(np.count_nonzero(reference.array == v))
                              for c, v in zip(card.class_names[1:], card.label_values[1:])}


@pytest.mark.slow
def test_warm_up_loads_the_model_before_the_click(headless, tmp_path):
    """A fresh logic (its own worker, made on first use) started early with the panel's model."""
    logic = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path),
                         worker_threads=1)
    try:
        logic.warm_up("no-such-model")  # never raises: the click reports it
        logic.warm_up(str(MODEL))
        assert logic.worker.ping(timeout=120)["cached_models"] == [str(MODEL)]
        outcome = logic.segment(SegmentRequest(headless.load_volume(SCAN), str(MODEL), overlays=()), timeout=300)
        assert outcome.timings["model_s"] < 0.05  # already loaded
        worker_temp = logic.worker.temp_dir
    finally:
        logic.close()
    assert logic._worker is None and not worker_temp.exists()


@pytest.mark.slow
def test_rerun_updates_the_same_nodes(headless, logic):
    scan = headless.load_volume(SCAN)
    first = logic.segment(SegmentRequest(scan, str(MODEL)), timeout=300)
    count = headless.scene.GetNumberOfNodes()
    params = SegmentParameters(input_volume=scan, model=str(MODEL), keep_largest=True,
                               output_segmentation=first.segmentation_node)
    second = logic.segment(SegmentRequest.from_parameters(params), timeout=300)
    assert second.segmentation_node is first.segmentation_node
    assert {k: n.GetID() for k, n in second.overlay_nodes.items()} == {k: n.GetID() for k, n in
                                                                      first.overlay_nodes.items()}
    assert headless.scene.GetNumberOfNodes() == count
    assert sl.overlay_nodes_of(headless.scene, scan) == list(first.overlay_nodes.values())
    # keep largest: each class is one connected component now
    from scipy import ndimage

    labels = labels_from_segmentation(headless.scene, headless.logic("Segmentations"), second.segmentation_node,
                                      scan).array
    for value in read_card(MODEL).label_values[1:]:
        assert ndimage.label(labels == value)[1] <= 1


@pytest.mark.slow
def test_roi_restricts_the_work(headless, logic):
    import slicer

    scan = headless.load_volume(SCAN)
    full = labels_from_segmentation(headless.scene, headless.logic("Segmentations"),
                                    logic.segment(SegmentRequest(scan, str(MODEL), overlays=()),
                                                  timeout=300).segmentation_node, scan).array
    roi = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    bounds = [0.0] * 6
    scan.GetRASBounds(bounds)
    center = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    roi.SetXYZ(center)
    roi.SetRadiusXYZ([(bounds[1] - bounds[0]) / 2 + 5, (bounds[3] - bounds[2]) / 2 + 5, 4.0])  # a slab
    outcome = logic.segment(SegmentRequest(scan, str(MODEL), roi_node=roi, overlays=("entropy",)), timeout=300)
    labels = labels_from_segmentation(headless.scene, headless.logic("Segmentations"),
                                      outcome.segmentation_node, scan).array
    assert labels.shape == full.shape
    from SemiSupSegLib.roi import roi_box_zyx

    z0, z1, y0, y1, x0, x1 = roi_box_zyx(roi, scan)
    outside = np.ones(labels.shape, bool)
    outside[z0:z1, y0:y1, x0:x1] = False
    assert z1 - z0 < labels.shape[0] and not labels[outside].any() and labels[~outside].any()
    assert isinstance(slicer.vtkMRMLMarkupsROINode(), object)


@pytest.mark.slow
def test_cancel_leaves_the_scene_as_it_was(headless, logic, worker):
    scan = headless.load_volume(LA_SCAN)  # a bigger scan: many windows, time to cancel mid-run
    state = _scene_state(headless.scene)
    job = None

    def cancel_on_first_progress(fraction, message, eta):
        if job.running:
            job.cancel(grace_s=10.0, block=False)

    job = logic.start(SegmentRequest(scan, str(MODEL), quality="accurate", overlays=("sdm", "entropy",
                                                                                      "probability")),
                      on_progress=cancel_on_first_progress)
    with pytest.raises(SegmentCancelled, match="scene is unchanged"):
        job.wait(timeout=300)
    assert job.state == "cancelled" and logic.job is None
    assert job._handle.error_kind == "cancelled" and job._handle.result is None  # stopped mid-run, not after
    assert _scene_state(headless.scene) == state
    assert not list(worker.temp_dir.iterdir()), "temporary files left behind"
    # the worker serves the next click
    outcome = logic.segment(SegmentRequest(headless.load_volume(SCAN), str(MODEL), overlays=()), timeout=300)
    assert outcome.segmentation_node.GetSegmentation().GetNumberOfSegments() == 2


def test_bad_requests_fail_before_anything_runs(headless, logic, tmp_path):
    scan = headless.load_volume(SCAN)
    labelmap = headless.load_volume(LABEL, name="label", labelmap=True)
    table = headless.scene.AddNewNodeByClass("vtkMRMLTableNode", "a table")
    roi = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    state = _scene_state(headless.scene)
    with pytest.raises(InputError, match="'label' is a label map"):
        logic.start(SegmentRequest(labelmap, str(MODEL)))
    with pytest.raises(InputError, match="'a table' is a vtkMRMLTableNode, not a scalar volume"):
        logic.start(SegmentRequest(table, str(MODEL), roi_node=roi))  # the input is named, not the ROI's problem
    with pytest.raises(InputError, match="no-such-model"):
        logic.start(SegmentRequest(scan, "no-such-model"))
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_bytes(b"not a model file")
    with pytest.raises(InputError, match="notes.pt"):
        logic.start(SegmentRequest(scan, str(not_a_model)))
    with pytest.raises(InputError, match="choose an input volume"):
        SegmentRequest(None, str(MODEL))
    with pytest.raises(InputError, match="quality"):
        SegmentRequest(scan, str(MODEL), quality="best")
    assert _scene_state(headless.scene) == state and logic.job is None


@pytest.mark.slow
def test_a_failing_run_reports_and_leaves_the_scene(headless, logic):
    scan = headless.load_volume(SCAN)
    state = _scene_state(headless.scene)
    job = logic.start(SegmentRequest(scan, str(MODEL), device="cuda:7"))  # no such GPU here
    with pytest.raises(SegmentError) as info:
        job.wait(timeout=300)
    assert job.state == "failed" and "cuda" in str(info.value).lower()
    assert "\n" not in job.error
    assert _scene_state(headless.scene) == state


@pytest.fixture(scope="module")
def headless_model(tmp_path_factory):
    """The bundled test model without its SDM head (its segmentation head's weights kept): a network like
    ``supervised``'s or ``sgrs``'s."""
    import dataclasses

    from semisupseg.checkpoint import load_model, make_card, save_model
    from semisupseg.nets import VNet, VNetConfig

    model, card = load_model(MODEL)
    net = {k: v for k, v in card.network.items() if k in {f.name for f in dataclasses.fields(VNetConfig)}}
    plain = VNet(VNetConfig(**dict(net, sdm_head=False))).eval()
    state = {k.replace("out_conv2.", "out_conv."): v for k, v in model.state_dict().items()
             if not k.startswith("out_conv.")}
    plain.load_state_dict(state)
    new = make_card(plain, method="supervised", spacing_xyz=card.spacing_xyz, patch_size_xyz=card.patch_size_xyz,
                    class_names=card.class_names, normalization=card.normalization, training=card.training)
    return save_model(tmp_path_factory.mktemp("plain") / "plain.pt", plain, new)


def test_a_model_without_sdm_head_shows_its_segmentations_sdm(headless, logic, headless_model):
    from SemiSupSegLib.scene import volume_from_node

    from semisupseg.inference import SDM_FROM_LABELS, segmentation_sdm

    assert sl.SDM_FROM_LABELS == SDM_FROM_LABELS  # the module's copy of the constant (it imports without torch)
    scan = headless.load_volume(SCAN)
    outcome = logic.segment(SegmentRequest(scan, str(headless_model), overlays=("sdm", "entropy")), timeout=300)
    assert any("no SDM head" in n and "segmentation" in n for n in outcome.notes)
    card = read_card(headless_model)
    labels = labels_from_segmentation(headless.scene, headless.logic("Segmentations"), outcome.segmentation_node,
                                      scan)
    assert sorted(outcome.overlay_nodes) == sorted(["entropy"] + [f"sdm:{c}" for c in card.class_names[1:]])
    expected = segmentation_sdm(labels.array, card.label_values, labels.spacing_zyx)
    for i, cls in enumerate(card.class_names[1:]):
        node = outcome.overlay_nodes[f"sdm:{cls}"]
        assert node.GetName() == f"{scan.GetName()} SDM of segmentation {cls}"
        np.testing.assert_allclose(volume_from_node(node).array, expected[i], atol=1e-6)


def test_worker_options_and_notes():
    card = read_card(MODEL)
    request = SegmentRequest(object(), "m", quality="accurate", keep_largest=True, overlays=("sdm",))
    options, notes = sl.worker_options(request, card, (1, 5, 2, 8, 3, 9))
    trained = tuple(card.training.get("augmentation", "papers") != "none" and [] or [])
    assert options["roi"] == [[1, 5], [2, 8], [3, 9]] and options["keep_largest"] is True
    assert options["compute_sdm"] is True and options["compute_entropy"] is False
    from semisupseg.inference import tta_axes_for_model

    assert tuple(options["tta_axes"]) == tta_axes_for_model(card, None)[0]
    if not options["tta_axes"]:
        assert any("'accurate' is the same as 'default'" in n for n in notes)
    assert trained == ()
    assert sl.worker_outputs(request, card) == ["labels", "sdm"]
    assert sl.worker_outputs(SegmentRequest(object(), "m", overlays=("probability", "entropy")), card) == [
        "labels", "probabilities", "entropy"]
    default, _ = sl.worker_options(SegmentRequest(object(), "m"), card, None)
    assert default["tta_axes"] == [] and "roi" not in default


def test_small_helpers():
    assert device_note("auto", False) == "no GPU found: runs on the CPU"
    assert "choose auto or cpu" in device_note("cuda", False)
    assert device_note("cpu", False) is None and device_note("cuda", True) is None
    assert status_text("window 3/12", 12.4) == "window 3/12 (about 12 s left)"
    assert status_text("window 3/12", 600) == "window 3/12 (about 10 min left)"
    assert status_text("loading", None) == "loading"
    assert sl.overlay_name("scan", "sdm:anterior") == "scan SDM anterior"
    assert sl.overlay_name("scan", "sdm:anterior", "SDM head") == "scan SDM anterior"
    assert sl.overlay_name("scan", "sdm:anterior", sl.SDM_FROM_LABELS) == "scan SDM of segmentation anterior"
    assert sl.overlay_name("scan", "entropy", sl.SDM_FROM_LABELS) == "scan entropy"


def test_model_choices_list_the_catalogue(tmp_path, monkeypatch):
    catalogue = ModelCatalogue(home=tmp_path)
    catalogue.add(MODEL, name="tiny")
    (tmp_path / "gone.pt").write_bytes(MODEL.read_bytes())
    catalogue.add(tmp_path / "gone.pt", name="gone")
    (tmp_path / "gone.pt").unlink()
    choices = {name: (label, text) for label, name, text in sl.model_choices(catalogue)}
    assert choices["tiny"][0] == "tiny (user)" and re.search(r"^method: +dtc$", choices["tiny"][1], re.M)
    assert choices["gone"][1].startswith("cannot be used:")
    # before the Python packages are installed (no torch: cards unreadable) the models are still listed
    monkeypatch.setitem(sys.modules, "semisupseg.checkpoint", None)
    choices = {name: (label, text) for label, name, text in sl.model_choices(catalogue)}
    assert choices["tiny"][1].startswith("model card not readable yet") and "click Segment" in choices["tiny"][1]
    assert choices["gone"][1].startswith("cannot be used: model file not found")


def test_a_chosen_model_brings_its_recommended_keep_largest(tmp_path):
    from semisupseg.checkpoint import load_model, save_model

    model, card = load_model(MODEL)
    card.inference = {"keep_largest": True}
    save_model(tmp_path / "kl.pt", model, card)
    catalogue = ModelCatalogue(home=tmp_path / "home")
    catalogue.add(MODEL, name="tiny")
    catalogue.add(tmp_path / "kl.pt", name="tiny-kl")
    assert sl.recommended_keep_largest(catalogue, "tiny-kl") is True
    assert sl.recommended_keep_largest(catalogue, "tiny") is False
    assert sl.recommended_keep_largest(catalogue, "no-such-model") is False


def test_an_ensemble_model_file_segments_in_the_scene_like_the_command_line(headless, logic, tmp_path):
    """An ensemble file (``semisupseg ensemble``) is one more model to the panel: labels equal to the command line's
    on the same file, the members' mean SDM shown as the network's SDM."""
    import torch

    from semisupseg.checkpoint import load_model, save_model
    from semisupseg.ensembles import combine_models

    model, card = load_model(MODEL)
    torch.manual_seed(0)
    with torch.no_grad():  # a second member that differs from the first
        for p in model.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    other = save_model(tmp_path / "other.pt", model, card)
    ensemble = save_model(tmp_path / "ensemble.pt", *combine_models([MODEL, other]))
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "semisupseg", "segment", str(SCAN), "--model", str(ensemble),
                             "-o", str(out), "--sdm"], capture_output=True, text=True, cwd=str(REPO), timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    scan = headless.load_volume(SCAN)
    outcome = logic.segment(SegmentRequest(scan, str(ensemble), overlays=("sdm",)), timeout=300)
    exported = labels_from_segmentation(headless.scene, headless.logic("Segmentations"), outcome.segmentation_node,
                                        scan)
    reference = read_volume(out / "hippocampus_023_label.nii.gz")
    np.testing.assert_array_equal(exported.array, reference.array)
    assert not any("no SDM head" in n for n in outcome.notes)  # both members have SDM heads: theirs is shown
    assert sorted(outcome.overlay_nodes) == sorted(f"sdm:{c}" for c in card.class_names[1:])
    truth = read_volume(LABEL).array
    for value in card.label_values[1:]:
        assert dice(exported.array == value, truth == value) > 0.5


def _segment_names(node):
    s = node.GetSegmentation()
    return [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())]


@pytest.mark.slow
def test_a_run_never_writes_over_segmentations_it_did_not_make_for_this_scan(headless, logic):
    """The output selector may hold the user's own segmentation or another scan's result (it stays on the last
    result when the input changes): those are kept as they are and the result goes into a new node, with a note.
    A result of this scan is replaced in place and keeps the name the user gave it; an empty node is filled."""
    scan = headless.load_volume(SCAN, name="scan")
    other = headless.load_volume(SCAN, name="other patient")
    first = logic.segment(SegmentRequest(scan, str(MODEL), overlays=()), timeout=300)
    first.segmentation_node.SetName("hippocampus - checked")
    again = logic.segment(SegmentRequest(scan, str(MODEL), overlays=(), output_segmentation=first.segmentation_node),
                          timeout=300)
    assert again.segmentation_node is first.segmentation_node and not again.notes
    assert first.segmentation_node.GetName() == "hippocampus - checked"

    mine = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my manual work")
    mine.GetSegmentation().AddEmptySegment("tumor", "tumor")
    for output, name, why in ((mine, "my manual work", "segments this module did not make ('tumor')"),
                              (first.segmentation_node, "hippocampus - checked", "segmentation of 'scan'")):
        outcome = logic.segment(SegmentRequest(other, str(MODEL), overlays=(), output_segmentation=output),
                                timeout=300)
        assert outcome.segmentation_node is not output
        assert outcome.segmentation_node.GetName().startswith("other patient segmentation")
        assert any(name in note and why in note and "kept as it is" in note for note in outcome.notes), outcome.notes
    assert _segment_names(mine) == ["tumor"] and mine.GetName() == "my manual work"
    assert _segment_names(first.segmentation_node) == ["Anterior", "Posterior"]

    empty = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")  # the selector's "Create new"
    filled = logic.segment(SegmentRequest(other, str(MODEL), overlays=(), output_segmentation=empty), timeout=300)
    assert filled.segmentation_node is empty and empty.GetName() == "other patient segmentation"
    assert not filled.notes

    gone = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "deleted meanwhile")
    job = logic.start(SegmentRequest(scan, str(MODEL), overlays=(), output_segmentation=gone))
    headless.scene.RemoveNode(gone)
    outcome = job.wait(timeout=300)
    assert outcome.segmentation_node.GetScene() is headless.scene
    assert any("left the scene" in note for note in outcome.notes)


@pytest.mark.slow
def test_overlays_stay_with_their_scan_through_a_scene_import_and_a_clone(headless, logic, tmp_path):
    """Results name their input by node references, which follow the nodes when a saved scene is added to a scene
    whose IDs collide (File > Add Data of a .mrml): the other scan neither lists nor overwrites them. A cloned
    overlay (the user's copy before a re-run) is never written into."""
    scan = headless.load_volume(SCAN, name="patient A")
    outcome = logic.segment(SegmentRequest(scan, str(MODEL), overlays=("entropy",)), timeout=300)
    saved_id = scan.GetID()
    for node in [scan, outcome.segmentation_node, *outcome.overlay_nodes.values()]:
        storage = node.GetStorageNode()
        if storage is None:
            storage = node.CreateDefaultStorageNode()
            headless.scene.AddNode(storage)
            node.SetAndObserveStorageNodeID(storage.GetID())
        suffix = ".seg.nrrd" if node.IsA("vtkMRMLSegmentationNode") else ".nrrd"
        storage.SetFileName(str(tmp_path / (node.GetName().replace(" ", "_") + suffix)))
        assert storage.WriteData(node)
    headless.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert headless.scene.Commit()

    headless.scene.Clear(0)
    mine = headless.load_volume(SCAN, name="patient B")
    assert mine.GetID() == saved_id  # the saved scene's IDs collide with this one's
    headless.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert headless.scene.Import()
    imported = headless.scene.GetFirstNodeByName("patient A")
    assert imported.GetID() != saved_id
    assert [n.GetName() for n in sl.overlay_nodes_of(headless.scene, imported)] == ["patient A entropy"]
    assert sl.overlay_nodes_of(headless.scene, mine) == []
    a_entropy = sl.find_overlay_node(headless.scene, imported, "entropy")
    before = slicer_array(a_entropy).copy()
    b = logic.segment(SegmentRequest(mine, str(MODEL), overlays=("entropy",)), timeout=300)
    assert b.overlay_nodes["entropy"] is not a_entropy and a_entropy.GetName() == "patient A entropy"
    assert np.array_equal(slicer_array(a_entropy), before)

    sh_logic = headless.logic("SubjectHierarchy")
    from SemiSupSegLib.results import ensure_sh_item

    sh = headless.scene.GetSubjectHierarchyNode()
    count = headless.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    sh_logic.CloneSubjectHierarchyItem(sh, ensure_sh_item(headless.scene, a_entropy), "my copy")
    clone = headless.scene.GetNthNodeByClass(count, "vtkMRMLScalarVolumeNode")  # headless: the clone has no SH item
    assert clone.GetName() == "my copy" and clone.GetAttribute(sl.OVERLAY_ATTRIBUTE) == "entropy"
    again = logic.segment(SegmentRequest(imported, str(MODEL), overlays=("entropy",)), timeout=300)
    assert again.overlay_nodes["entropy"] is a_entropy and clone.GetName() == "my copy"
    assert sl.overlay_nodes_of(headless.scene, imported) == [a_entropy]


def slicer_array(node):
    import slicer

    return slicer.util.arrayFromVolume(node)
