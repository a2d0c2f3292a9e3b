"""Fixtures for the tests of the Slicer modules' Qt-free library (``SemiSupSeg/SemiSupSegLib``).

The library is imported from the source checkout, as Slicer does when the module folders are added to its module
paths.

``headless``: a fresh headless Slicer for each test (:class:`SemiSupSegLib.headless.HeadlessSlicer`: ``.scene``,
``.app_logic``, ``.logic(name)`` for the Colors, Volumes, Segmentations, SubjectHierarchy, Markups, CropVolume,
Tables and Plots module logics, ``.load_volume(path)`` through Slicer's own readers). Building one costs ~10 ms
after the first (~1 s, the imports). Without ``slicer-core`` the tests that use it are skipped — except in CI
(``CI`` set), where they fail: CI must run them.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
for module_dir in (REPO / "SemiSupSeg", REPO / "SemiSupSegTraining"):
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))

TEST_DATA = REPO / "Testing" / "data"
SAMPLE_DATA = REPO / "semisupseg" / "sample_data"


def require_slicer():
    """Import ``slicer`` (slicer-core); skip the test without it, fail instead when ``CI`` is set."""
    try:
        import slicer

        slicer.vtkMRMLScene  # noqa: B018  (the meta-package imports without slicer-core's modules)
        return slicer
    except (ImportError, AttributeError) as exc:
        message = f"slicer-core is not installed ({exc}); install the test extras: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail("CI must run the Slicer library tests: " + message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def headless():
    """A new headless Slicer scene with application logic and module logics (see the module docstring)."""
    require_slicer()
    from SemiSupSegLib.headless import build_headless_slicer

    h = build_headless_slicer()
    yield h
    h.scene.Clear(1)


@pytest.fixture
def test_data() -> Path:
    """``Testing/data`` (small real scans, bundled)."""
    return TEST_DATA
