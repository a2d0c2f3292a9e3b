"""End to end: each baseline method trains through the engine (``semisupseg.training.Trainer``) for a few
iterations with finite losses and a decreasing supervised loss.

Three data sources: synthetic three-class volumes (multi-class path, always run), the real LA crop shipped in
``Testing/data/la_crop`` (binary; DTC then uses its sigmoid head form) and a tiny real subset of
``../shared/data/LA`` read through the config path (skips when the shared data is absent; ``slow``).

Robustness: small models (n_filters 4), fixed seeds, the supervised terms averaged over the first and the last
iterations (mean of 4 against mean of 4 of 10) instead of single noisy values.
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import pytest

from conftest import TEST_DATA

pytest.importorskip("semisupseg.training.engine")

from semisupseg.training.config import TrainConfig  # noqa: E402
from semisupseg.training.data import CaseArrays, TrainData  # noqa: E402
from semisupseg.training.engine import Trainer  # noqa: E402
from semisupseg.training.events import Events  # noqa: E402

BASELINES = ("mean-teacher", "ua-mt", "entropy-min", "dtc")
SUPERVISED_TERMS = ("ce", "dice", "sdm")
WINDOW = 4


def _config(method: str, out, iterations: int, patch_xyz, num_classes: int, seed: int = 5) -> TrainConfig:
    cfg = TrainConfig(method=method, out=str(out), iterations=iterations, batch_size=4, labeled_batch_size=2,
                      seed=seed, device="cpu", val_every=10 ** 6, save_every=10 ** 6)
    cfg.data.patch_size = list(patch_xyz)
    cfg.data.num_classes = num_classes
    cfg.data.validation = 0
    cfg.model.n_filters = 4
    # the patches these short runs were checked with (3 seeds) before "none" became the default; what they test is
    # that each method's losses are finite and fall, not the augmentation
    cfg.data.augment = "papers"
    # likewise the patches as cropped (data.perturb became "both" later): 10 steps with 30 % of the patches
    # resampled are too noisy for "the loss falls over 4-step windows"
    cfg.data.perturb = "none"
    return cfg


def _train(cfg: TrainConfig, data=None) -> List[Dict]:
    records: List[Dict] = []
    events = Events(bar=False, listeners=[records.append])
    result = Trainer(cfg, events=events, data=data, handle_signals=False).run()
    assert result.status == "finished" and result.iteration == cfg.iterations
    return [r for r in records if r["event"] == "iteration"]


def _check_training(method: str, iterations: List[Dict], expected_sdm: bool) -> None:
    assert iterations, "no iteration events"
    supervised = []
    for rec in iterations:
        assert all(math.isfinite(v) for v in rec["losses"].values()), rec["losses"]
        assert math.isfinite(rec["loss"])
        assert ("sdm" in rec["losses"]) == expected_sdm
        supervised.append(sum(v for k, v in rec["losses"].items() if k in SUPERVISED_TERMS))
    first, last = np.mean(supervised[:WINDOW]), np.mean(supervised[-WINDOW:])
    assert last < first, f"{method}: supervised loss did not decrease: {np.round(supervised, 4).tolist()}"


def _synthetic_case(case_id: str, rng: np.random.Generator, shape=(16, 16, 16), labeled=True) -> CaseArrays:
    """Three classes: a bright ball (class 2) inside a medium shell (class 1) at a random place, in noise."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35 * s, 0.65 * s) for s in shape]
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    label = np.zeros(shape, np.int64)
    label[r < 6] = 1
    label[r < 3] = 2
    image = (label.astype(np.float32) + rng.normal(0, 0.4, shape).astype(np.float32))
    image = (image - image.mean()) / image.std()
    return CaseArrays(case_id, image, label if labeled else None)


def _synthetic_data(seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    return TrainData(labeled=[_synthetic_case(f"l{i}", rng) for i in range(2)],
                     unlabeled=[_synthetic_case(f"u{i}", rng, labeled=False) for i in range(2)])


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains_on_synthetic_three_class_volumes(method, tmp_path):
    cfg = _config(method, tmp_path / "run", 10, (16, 16, 16), num_classes=3)
    cfg.data.augment = False
    _check_training(method, _train(cfg, _synthetic_data()), expected_sdm=method == "dtc")


def _la_crop_data() -> TrainData:
    from semisupseg.io import read_la_h5

    path = TEST_DATA / "la_crop" / "mri_norm2.h5"
    image, label = read_la_h5(path)
    labeled = CaseArrays("la_crop", image.array, label.array.astype(np.int64), image.spacing)
    unlabeled = CaseArrays("la_crop_unlabeled", image.array, None, image.spacing)
    return TrainData(labeled=[labeled], unlabeled=[unlabeled])


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains_on_the_repo_la_crop(method, tmp_path):
    """Real LGE-MRI crop (40 x 36 x 16 voxels, x y z) shipped with the tests; binary, with flips/rotations."""
    cfg = _config(method, tmp_path / "run", 10, (32, 32, 16), num_classes=2)
    iterations = _train(cfg, _la_crop_data())
    _check_training(method, iterations, expected_sdm=method == "dtc")
    if method == "ua-mt":
        assert all(0.0 <= r["logs"]["mask_fraction"] <= 1.0 for r in iterations)
        assert iterations[0]["logs"]["threshold"] == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))


@pytest.mark.slow
@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains_on_a_shared_la_subset(method, la_dir, tmp_path):
    """Two labeled + two unlabeled cases of the downsampled LA set (1.25 mm), read through the config path."""
    cfg = _config(method, tmp_path / "run", 10, (32, 32, 16), num_classes=2)
    cfg.data.labeled = str(la_dir)
    cfg.data.split_labeled = None
    cfg.data.num_labeled = 2
    cfg.data.max_unlabeled = 2
    cfg.data.foreground_prob = 1.0  # small crops of a whole LA case often miss the atrium: keep losses comparable
    _check_training(method, _train(cfg), expected_sdm=method == "dtc")
