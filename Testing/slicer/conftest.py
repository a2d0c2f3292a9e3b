"""Fixtures for the tests of the Slicer modules' Qt-free library (``SemiSupSeg/SemiSupSegLib``).

The library is imported from the source checkout, as Slicer does when the module folders are added to its module
paths.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for module_dir in (REPO / "SemiSupSeg", REPO / "SemiSupSegTraining"):
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
