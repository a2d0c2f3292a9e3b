"""The modules' self-tests ("Reload and Test" inside Slicer) run SemiSupSegLib.self_tests; here the same scenarios
run on a headless scene, so a self-test that cannot pass shows up in this suite, and one that cannot fail too (a
model whose classes are not the card's, or a training that does not finish, must raise)."""
from __future__ import annotations

import pytest

from slicer_guard import SAMPLE_DATA

TEST_MODEL = SAMPLE_DATA.parents[2] / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"


@pytest.fixture
def segment_logic(headless, tmp_path):
    from semisupseg.catalogue import ModelCatalogue
    from SemiSupSegLib.segment_logic import SegmentLogic

    logic = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path))
    yield logic
    logic.close()


def test_segment_sample_scan_passes_and_can_fail(headless, segment_logic):
    from SemiSupSegLib.self_tests import segment_sample_scan

    outcome = segment_sample_scan(headless.scene, headless.logic("Segmentations"), segment_logic,
                                  headless.load_volume, str(TEST_MODEL))
    assert outcome.segmentation_node is not None
    with pytest.raises(AssertionError, match="Dice of Anterior"):  # the bar the tiny model cannot reach
        segment_sample_scan(headless.scene, headless.logic("Segmentations"), segment_logic, headless.load_volume,
                            str(TEST_MODEL), min_dice=0.999)


def test_train_watch_and_segment_passes(headless, segment_logic, tmp_path):
    from SemiSupSegLib.self_tests import train_watch_and_segment
    from SemiSupSegLib.training_logic import TrainingLogic

    training = TrainingLogic(catalogue=segment_logic.catalogue)
    outcome = train_watch_and_segment(headless.scene, training, segment_logic, headless.load_volume, str(tmp_path))
    assert "entropy" in outcome.overlay_nodes


def test_the_self_tests_say_why_they_skip_without_torch(monkeypatch):
    """Without PyTorch (a fresh Slicer, the Extensions build's test run) the self-tests stop with a reason that
    says how to install it, instead of failing on an import."""
    import importlib.util

    from SemiSupSegLib import self_tests

    assert self_tests.skip_reason() is None  # this environment has torch
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert "PyTorch is not installed" in self_tests.skip_reason() and "Segment" in self_tests.skip_reason()


def test_the_skip_also_holds_when_ctest_runs_the_test_methods(monkeypatch):
    """Slicer's ctest (``slicer.testing.runUnitTest``) loads the ``test_*`` methods with unittest's loader, which
    calls ``setUp`` and never ``runTest``: the skip and the empty scene live in ``setUp`` now (``set_up``), and
    "Reload and Test" (``runTest``) shows the reason instead of reporting a failure."""
    import importlib.util
    import unittest

    from SemiSupSegLib import self_tests

    class Scene:
        cleared = 0

        def Clear(self):
            Scene.cleared += 1

    ran, shown = [], []

    class Case(unittest.TestCase):  # the shape of the modules' ScriptedLoadableModuleTest classes
        def setUp(self):
            self_tests.set_up(self, Scene())

        def runTest(self):
            self_tests.run_test(self, self.test_scenario)

        def delayDisplay(self, text):
            shown.append(text)

        def test_scenario(self):
            ran.append("scenario")

    def run_loaded():
        result = unittest.TestResult()
        unittest.TestLoader().loadTestsFromTestCase(Case).run(result)
        return result

    result = run_loaded()
    assert ran == ["scenario"] and not result.skipped and result.wasSuccessful() and Scene.cleared == 1
    Case().runTest()
    assert ran == ["scenario"] * 2 and Scene.cleared == 2 and not shown
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result = run_loaded()
    assert ran == ["scenario"] * 2 and len(result.skipped) == 1 and "PyTorch is not installed" in result.skipped[0][1]
    Case().runTest()
    assert ran == ["scenario"] * 2 and shown and "PyTorch is not installed" in shown[0]
