"""The short fuzz run of the readers (``benchmarks/fuzz_readers.py``, 200 seeded cases over every format): each
mutated real file must be read as a valid Volume (or model) or refused with an InputError; any other exception, an
invalid Volume, a hang or a crash of the reading process fails the test with the case's mutation and traceback.
The long run (5000 cases) is documented in the script and its last result in the README."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fuzz_module():
    # imported by name from benchmarks/ (on sys.path, which the spawned reading processes inherit: they import
    # their entry function from the same module)
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module("fuzz_readers")


def test_fuzz_readers_short_run(tmp_path):
    fuzz = _fuzz_module()
    result = fuzz.fuzz(200, seed=20261202, workers=2, timeout=60, out=tmp_path)
    print("\n" + result.table())
    assert result.cases == 200
    assert not result.findings, "\n".join(f"{f['format']} {f['mutation']}: {f['outcome']}\n{f['detail']}"
                                         for f in result.findings[:5])
    # every format was exercised, and both outcomes occur (the mutations reach the parsers, not only the CRCs)
    formats = {f for f, _ in result.counts}
    assert formats == {"nii.gz", "label.nii.gz", "nii", "nrrd", "nrrd-raw", "mha", "mha-raw", "h5", "dicom", "pt"}
    assert sum(n for (_, o), n in result.counts.items() if o == "refused") >= 50
    assert sum(n for (_, o), n in result.counts.items() if o == "volume") >= 20


def test_mutations_are_seeded(tmp_path):
    """The same seed and case give the same bytes (a finding can be reproduced from its case number)."""
    import random

    fuzz = _fuzz_module()
    seeds = {"nii.gz": fuzz.SCAN, "h5": fuzz.H5}
    for fmt, seed in seeds.items():
        a, b = tmp_path / f"a_{fmt}", tmp_path / f"b_{fmt}"
        what_a = fuzz.mutate(random.Random("7:3"), fmt, seed, a)
        what_b = fuzz.mutate(random.Random("7:3"), fmt, seed, b)
        assert what_a == what_b and a.read_bytes() == b.read_bytes() and a.read_bytes() != seed.read_bytes()
