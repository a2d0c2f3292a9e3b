"""The scenarios of the two modules' self-tests ("Reload and Test" in Slicer), Qt-free.

Inside Slicer, ``SemiSupSegTest`` and ``SemiSupSegTrainingTest`` run them on the application's scene and module
logics; ``Testing/slicer/test_self_tests.py`` runs the very same functions on a headless scene, so a self-test that
could not pass (or could not fail) shows up here first. Each raises ``AssertionError`` naming what went wrong.

The scene, the Segmentations module logic, a volume loader (``load_volume(path) -> node``: Slicer's
``slicer.util.loadVolume`` or the headless one) and ``process_events`` (the application's event loop, or nothing)
are passed in.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

#: the bundled sample scan the scenarios segment (``sample_dataset("hippocampus")``), and the one a run snapshots
SCAN_CASE = "hippocampus_023"
OVERLAY_CASE = "hippocampus_015"


def skip_reason() -> Optional[str]:
    """Why the scenarios cannot run here (``None``: they can): PyTorch is installed on demand by the first Segment or
    Start, so a fresh Slicer (and the Extensions build's test run) has none; the self-tests then say so and stop."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "skipped: PyTorch is not installed in this Slicer (click Segment or Start once to install it)"
    return None


def set_up(test_case, scene) -> None:
    """A self-test's ``setUp``: an empty scene, and ``skipTest`` with :func:`skip_reason` when the scenarios cannot
    run. Slicer's ctest runs the ``test_*`` methods through unittest's loader, which calls ``setUp`` and never
    ``runTest``: the skip in ``runTest`` alone let them fail on a build machine without PyTorch."""
    scene.Clear()
    reason = skip_reason()
    if reason:
        test_case.skipTest(reason)


def run_test(test_case, *tests: Callable[[], Any]) -> None:
    """A self-test's ``runTest`` ("Reload and Test"): the skip reason shown (not raised: the button would report a
    failure), else ``setUp`` and each of ``tests``."""
    reason = skip_reason()
    if reason:
        test_case.delayDisplay(reason)
        return
    for test in tests:
        test_case.setUp()
        test()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _segment_names(segmentation_node) -> list:
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]


def segment_sample_scan(scene, segmentations_logic, segment_logic, load_volume: Callable[[str], Any],
                        model: str, min_dice: float = 0.5, timeout: float = 600.0) -> Any:
    """Segment the bundled sample scan with ``model`` (a path or catalogue name) through ``segment_logic`` (a
    :class:`SegmentLogic`: the background worker); check the segment names against the model card, the geometry
    against the scan and the Dice of every class against the scan's label (> ``min_dice``). Returns the outcome."""
    from semisupseg.checkpoint import read_card
    from semisupseg.data import sample_dataset
    from semisupseg.io import read_label
    from semisupseg.metrics import dice
    from SemiSupSegLib.results import labels_from_segmentation
    from SemiSupSegLib.segment_logic import SegmentRequest

    root = sample_dataset("hippocampus")
    scan = load_volume(str(root / "imagesTr" / f"{SCAN_CASE}.nii.gz"))
    truth = read_label(root / "labelsTr" / f"{SCAN_CASE}.nii.gz").array
    card = read_card(segment_logic.catalogue.resolve(model))
    outcome = segment_logic.segment(SegmentRequest(scan, model), timeout=timeout)
    names = _segment_names(outcome.segmentation_node)
    _check(names == list(card.class_names[1:]), f"segment names {names}, the model card says {card.class_names[1:]}")
    labels = labels_from_segmentation(scene, segmentations_logic, outcome.segmentation_node, scan).array
    _check(labels.shape == truth.shape, f"label map {labels.shape} (z, y, x), the scan's label {truth.shape}")
    for value, name in zip(card.label_values[1:], card.class_names[1:]):
        score = dice(labels == value, truth == value)
        _check(score > min_dice, f"Dice of {name} {score:.3f} <= {min_dice}")
    _check("entropy" in outcome.overlay_nodes, f"no entropy overlay (made: {sorted(outcome.overlay_nodes)})")
    return outcome


def train_watch_and_segment(scene, training, segment_logic, load_volume: Callable[[str], Any], work_dir: str,
                            process_events: Optional[Callable[[], None]] = None, timeout: float = 600.0) -> Any:
    """Train ``mean-teacher`` for 6 iterations on the bundled sample data in the background (``training``: a
    :class:`TrainingLogic`), follow it as the panel's timer does until it ends, check the plots (losses at 1-6, two
    validations, a loss chart) and the snapshot overlays (iteration 6, images set), register the run's model and
    segment a sample scan with it (two named classes, an entropy overlay). Returns the outcome."""
    from semisupseg.data import sample_dataset
    from SemiSupSegLib.segment_logic import SegmentRequest
    from SemiSupSegLib.training_logic import RunView, TrainingSettings

    root = sample_dataset("hippocampus")
    session = training.start(TrainingSettings(
        method="mean-teacher", labeled=str(root), run_dir=os.path.join(work_dir, "run"), iterations=6,
        patch_size=(32, 32, 32), batch_size=4, labeled_batch_size=2, device="cpu", overlay_cases=(OVERLAY_CASE,),
        overlay_every=3, overrides=("model.n_filters=4", "val_every=3", 'data.split_labeled="labeled_2"')))
    view, end = None, time.monotonic() + timeout
    while not (session.ended and not session.runner.running) and time.monotonic() < end:
        if process_events is not None:
            process_events()
        new = session.poll()  # what the panel's timer does
        if view is None and session.events:
            view = RunView(scene, session)  # draws what was read so far
        elif view is not None:
            view.update(new)
        time.sleep(0.1)
    _check(session.status == "finished", f"the run ended {session.status!r}:\n{session.log_text}")
    _check(view is not None, "the run finished without a single event drawn")
    iterations = list(view.plots.column("losses", "iteration"))
    _check(iterations == [1, 2, 3, 4, 5, 6], f"loss plot at iterations {iterations}, expected 1-6")
    _check(len(view.plots.column("validation", "dice")) == 2, "not two validations plotted (val_every 3 of 6)")
    _check(view.charts["loss"].GetNumberOfPlotSeriesNodes() > 0, "the loss chart has no series")
    loaded = view.overlays.loaded.get(OVERLAY_CASE, {})
    _check(loaded.get("iteration") == 6, f"the overlays shown are of iteration {loaded.get('iteration')}, not 6")
    _check(all(n.GetImageData() is not None for n in view.overlays.nodes.values()), "an overlay node has no image")
    name = training.use_in_segment(session.run_dir)
    scan = load_volume(str(root / "imagesTr" / f"{SCAN_CASE}.nii.gz"))
    outcome = segment_logic.segment(SegmentRequest(scan, name, overlays=("entropy",)), timeout=timeout)
    names = _segment_names(outcome.segmentation_node)
    _check(names == ["Anterior", "Posterior"], f"segment names {names}")
    _check("entropy" in outcome.overlay_nodes, "no entropy overlay")
    return outcome


__all__ = ["OVERLAY_CASE", "SCAN_CASE", "segment_sample_scan", "skip_reason", "train_watch_and_segment"]
