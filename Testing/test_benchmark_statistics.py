"""The held-out benchmark's statistics and score-file bookkeeping (``benchmarks/heldout.py``): every accuracy
claim in RESULTS.md is read through these."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def heldout():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import heldout as module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def test_sign_test_exact_values(heldout):
    # 5 of 5 positive: two-sided p = 2 / 2**5; zeros are dropped; a 3:3 split is p = 1
    assert heldout.sign_test_p([0.1] * 5) == pytest.approx(2 / 32)
    assert heldout.sign_test_p([0.1] * 5 + [0.0] * 7) == pytest.approx(2 / 32)
    assert heldout.sign_test_p([1, 1, 1, -1, -1, -1]) == 1.0
    assert heldout.sign_test_p([]) == 1.0
    # 9 positive, 1 negative: 2 * (1 + 10) / 1024
    assert heldout.sign_test_p([1] * 9 + [-1]) == pytest.approx(22 / 1024)


def test_sign_test_takes_numpy_arrays_of_any_length(heldout):
    """numpy counts overflowed ``2 ** n`` from n = 63 on: 50 + / 13 - gave a negative p, 60 + / 4 - gave 1."""
    from scipy.stats import binomtest

    for pos, neg in ((50, 13), (60, 4), (200, 40), (3, 2)):
        diffs = np.array([0.01] * pos + [-0.01] * neg)
        assert heldout.sign_test_p(diffs) == pytest.approx(binomtest(pos, pos + neg).pvalue, rel=1e-9)
        assert heldout.sign_test_p(diffs) == pytest.approx(heldout.sign_test_p(list(diffs)), rel=1e-12)


def test_paired_differences_take_the_test_case_as_the_unit(heldout):
    """Two classes of one case and one case under several seeds are not independent: each case gives one
    difference (the mean over its classes and shared seeds), the sign test and the interval count cases, and each
    seed's mean difference is shown apart. Unpaired and NaN entries are left out."""
    nan = math.nan

    def scores(values):
        return {key: {"dice": v, "hd95_mm": 1.0, "asd_mm": 1.0} for key, v in values.items()}

    run = {1: scores({("a", 1): 0.9, ("a", 2): 0.8, ("b", 1): 0.7, ("b", 2): nan, ("c", 1): 0.5}),
           2: scores({("a", 1): 0.95, ("a", 2): 0.85, ("b", 1): 0.6, ("b", 2): 0.6, ("c", 1): 0.5}),
           3: scores({("a", 1): 0.1})}  # a seed the reference lacks
    ref = {1: scores({("a", 1): 0.8, ("a", 2): 0.8, ("b", 1): 0.6, ("b", 2): 0.6}),
           2: scores({("a", 1): 0.85, ("a", 2): 0.75, ("b", 1): 0.7, ("b", 2): 0.5, ("c", 1): 0.5})}
    per_case, per_seed = heldout.case_differences(run, ref)
    assert per_case == pytest.approx({"a": (0.1 + 0.0 + 0.1 + 0.1) / 4, "b": (0.1 - 0.1 + 0.1) / 3, "c": 0.0})
    assert per_seed == pytest.approx({1: (0.1 + 0.0 + 0.1) / 3, 2: (0.1 + 0.1 - 0.1 + 0.1 + 0.0) / 5})
    text = heldout.paired_comparison(run, ref)
    assert text.startswith("+0.036 [") and "p = 0.5 (3 cases); per seed +0.067, +0.040" in text
    assert heldout.paired_comparison(run, {}) == ""


def test_distance_means_say_how_many_cases_they_hold(heldout):
    assert heldout.finite_mean([1.0, 3.0]) == "2.00"
    assert heldout.finite_mean([1.0, 3.0, math.nan, math.inf]) == "2.00 (n 2/4)"
    assert heldout.finite_mean([math.nan]) == "-"


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n(heldout):
    rng = np.random.default_rng(3)
    small = rng.normal(0.01, 0.02, 16)
    large = rng.normal(0.01, 0.02, 400)
    lo_s, hi_s = heldout.bootstrap_ci(small)
    lo_l, hi_l = heldout.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)
    # the normal-theory width for n = 400 is 2 x 1.96 x 0.02 / 20 = 0.0039; the bootstrap agrees within 20 %
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * large.std() / math.sqrt(400), rel=0.2)


def test_raw_and_keep_largest_scores_are_kept_apart(heldout, tmp_path, monkeypatch):
    monkeypatch.setattr(heldout, "ARCHIVE_DIR", tmp_path / "archive")
    out = tmp_path / "runs"
    run = out / "la" / heldout.run_name("sassnet", 16, "none", 2)
    assert run.name == "sassnet_l16_none_s2"
    run.mkdir(parents=True)
    assert heldout.scores_file(out, "la", run.name) is None
    assert heldout.scores_file(out, "la", run.name, keep_largest=True) is None
    archived_kl = heldout.archive_path(out, "la", run.name, keep_largest=True)
    assert archived_kl.name == "sassnet_l16_none_s2_keep-largest.csv"
    archived_kl.parent.mkdir(parents=True)
    archived_kl.write_text("case,label,dice,hd95_mm,asd_mm\nA,1,0.9,2,1\n")
    # the archived post-processed scores never stand in for the raw ones
    assert heldout.scores_file(out, "la", run.name) is None
    assert heldout.scores_file(out, "la", run.name, keep_largest=True) == archived_kl
    # a run folder's own file wins over the archive
    (run / "test_keep-largest.csv").write_text("case,label,dice,hd95_mm,asd_mm\nA,1,0.8,2,1\n")
    found = heldout.scores_file(out, "la", run.name, keep_largest=True)
    assert found == run / "test_keep-largest.csv"
    assert heldout.read_scores(found)[("A", 1)]["dice"] == 0.8
