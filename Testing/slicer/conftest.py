"""Fixtures for the tests of the Slicer modules' Qt-free library (``SemiSupSeg/SemiSupSegLib``).

The library is imported from the source checkout, as Slicer does when the module folders are added to its module
paths.

``headless``: a fresh headless Slicer for each test (:class:`SemiSupSegLib.headless.HeadlessSlicer`: ``.scene``,
``.app_logic``, ``.logic(name)`` for the Colors, Volumes, Segmentations, SubjectHierarchy, Markups, CropVolume,
Tables and Plots module logics, ``.load_volume(path)`` through Slicer's own readers). Building one costs ~10 ms
after the first (~1 s, the imports). Without ``slicer-core`` the tests that use it are skipped — except in CI
(``CI`` set), where they fail: CI must run them.
"""
import sys
from pathlib import Path

import pytest

from slicer_guard import MODULE_FOLDERS, SAMPLE_DATA, TEST_DATA, headless_scene, require_slicer  # noqa: F401

for module_dir in MODULE_FOLDERS:
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))


#: a fresh headless Slicer for each test (see the module docstring)
headless = pytest.fixture(name="headless")(headless_scene)


@pytest.fixture
def test_data() -> Path:
    """``Testing/data`` (small real scans, bundled)."""
    return TEST_DATA
