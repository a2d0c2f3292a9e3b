"""Orientation-preserving perturbations (semisupseg.data.perturb) and their path through sampler, batcher,
config and engine."""
from __future__ import annotations

import json

import numpy as np
import pytest

from semisupseg.data.perturb import (MAX_ROTATION_DEG, SCALE_RANGE, SPATIAL_PROB, draw_spatial, perturb_intensity,
                                     perturbation_name, resample_patch)
from semisupseg.data.sampling import PatchSampler
from semisupseg.errors import InputError
from semisupseg.training import TrainConfig, load_config, load_run_config, save_config
from semisupseg.training.batches import TwoStreamBatcher


def _rot_zaxis(deg):
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def test_identity_resample_is_the_crop_and_a_quarter_turn_is_rot90_about_the_crop_centre():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(2, 20, 22, 24)).astype(np.float32)
    lab = rng.integers(0, 3, size=(20, 22, 24))
    start, size = (3, 4, 5), (8, 10, 10)
    centre = [s + (n - 1) / 2 for s, n in zip(start, size)]
    crop = (slice(3, 11), slice(4, 14), slice(5, 15))
    np.testing.assert_allclose(resample_patch(vol, np.eye(3), centre, size, 1), vol[(slice(None),) + crop],
                               atol=1e-6)
    assert np.array_equal(resample_patch(lab, np.eye(3), centre, size, 0), lab[crop])
    # offsets d of the output read the case at centre + M d: a quarter turn in (y, x) is numpy's rot90 of the crop
    turned = resample_patch(lab, np.round(_rot_zaxis(90)), centre, size, 0)
    assert np.array_equal(turned, np.rot90(lab[crop], k=-1, axes=(1, 2))) or \
        np.array_equal(turned, np.rot90(lab[crop], k=1, axes=(1, 2)))
    # a zoom > 1 (matrix 1/zoom) magnifies: the centre voxel stays, the patch covers less of the case
    z = resample_patch(lab, np.eye(3) / 2.0, (7, 9, 10), (9, 9, 9), 0)
    assert z[4, 4, 4] == lab[7, 9, 10] and z[4, 4, 6] == lab[7, 9, 11] and z[8, 0, 4] == lab[9, 7, 10]


def test_spatial_draws_stay_within_the_stated_ranges_and_never_reflect():
    rng = np.random.default_rng(1)
    drawn = [draw_spatial(rng) for _ in range(4000)]
    matrices = [m for m in drawn if m is not None]
    assert abs(len(matrices) / len(drawn) - SPATIAL_PROB) < 0.03
    for m in matrices:
        zoom = 1.0 / abs(np.linalg.det(m)) ** (1 / 3)
        assert SCALE_RANGE[0] - 1e-9 <= zoom <= SCALE_RANGE[1] + 1e-9
        assert np.linalg.det(m) > 0  # a rotation times a positive scale: orientation kept, no mirror
        rot = m * zoom
        # each axis moves by at most the composed angle of three <= 15-degree turns
        assert np.all(np.diag(rot) >= np.cos(np.deg2rad(3 * MAX_ROTATION_DEG)) - 1e-9)


def _lateral_case(shape=(24, 40, 40)):
    """A structure on the low-x side only, and an image that is its label (so alignment can be read off)."""
    label = np.zeros(shape, np.int64)
    label[6:18, 12:28, 4:16] = 1
    label[6:18, 12:28, 16:18] = 2
    return label.astype(np.float32) * 10.0, label


def test_spatially_perturbed_patches_keep_the_side_and_stay_aligned_with_their_labels():
    image, label = _lateral_case()
    s = PatchSampler([(image, label)], (16, 24, 24), seed=3, perturb="spatial")
    changed = 0
    for _ in range(300):
        im, lb = s.sample()
        assert im.shape == (1, 16, 24, 24) and im.dtype == np.float32 and lb.dtype == np.int64
        assert set(np.unique(lb)) <= {0, 1, 2}
        # trilinear image and nearest label of the same transform agree away from edges
        assert np.mean(np.abs(im[0] / 10.0 - lb) < 0.5) > 0.9
        if (lb == 1).any() and (lb == 2).any():
            # class 2 is the +x neighbour of class 1: a mirror of x would put it on the other side
            x1 = np.nonzero(lb == 1)[2].mean()
            x2 = np.nonzero(lb == 2)[2].mean()
            assert x2 > x1
        plain = not np.any(np.abs(im[0] - np.round(im[0])) > 1e-4)
        changed += not plain
    assert 0.15 < changed / 300 < 0.45  # about SPATIAL_PROB of the patches are resampled off the grid


def test_intensity_perturbation_changes_images_and_leaves_labels_and_input_alone():
    rng = np.random.default_rng(5)
    patch = rng.normal(size=(2, 8, 12, 12)).astype(np.float32)
    kept = patch.copy()
    outs = [perturb_intensity(patch, rng) for _ in range(400)]
    assert np.array_equal(patch, kept)  # a new array each time
    assert all(o.shape == patch.shape and o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    changed = [not np.array_equal(o, patch) for o in outs]
    # P(a channel unchanged) = 0.9 * 0.85 * 0.85 * 0.7 = 0.455; P(both unchanged) = 0.207
    assert 0.72 < np.mean(changed) < 0.86
    # labels: every patch's label is an exact crop of the case's (a volume of distinct values shows where)
    shape = (24, 40, 40)
    label = np.arange(np.prod(shape)).reshape(shape)
    s = PatchSampler([(rng.normal(size=shape).astype(np.float32), label)], (16, 24, 24), seed=4,
                     perturb="intensity")
    for _ in range(50):
        _, lb = s.sample()
        z, y, x = np.unravel_index(lb[0, 0, 0], shape)
        assert np.array_equal(lb, label[z:z + 16, y:y + 24, x:x + 24])


def test_perturbed_sampler_is_seeded_and_resumes_exactly():
    image, label = _lateral_case()
    a = PatchSampler([(image, label)], (16, 24, 24), seed=7, perturb="both", foreground_prob=0.5)
    first = [a.sample() for _ in range(5)]
    state = json.loads(json.dumps(a.state_dict()))
    rest = [a.sample() for _ in range(5)]
    b = PatchSampler([(image, label)], (16, 24, 24), seed=7, perturb="both", foreground_prob=0.5)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first, [b.sample() for _ in range(5)]))
    c = PatchSampler([(image, label)], (16, 24, 24), seed=7, perturb="both", foreground_prob=0.5)
    c.load_state_dict(state)
    for (i1, l1), (i2, l2) in zip(rest, [c.sample() for _ in range(5)]):
        assert np.array_equal(i1, i2) and np.array_equal(l1, l2)


def test_policy_names_config_errors_and_the_batcher_keeps_old_factories_working():
    assert perturbation_name(None) == "none" and perturbation_name(" Both ") == "both"
    with pytest.raises(ValueError, match="perturbation must be one of"):
        perturbation_name("elastic")
    with pytest.raises(InputError):
        PatchSampler([np.zeros((8, 8, 8), np.float32)], (8, 8, 8), perturb="elastic")
    cfg = TrainConfig()
    cfg.data.perturb = "elastic"
    with pytest.raises(Exception, match="data.perturb"):
        cfg.validate()

    calls = []

    def old_factory(cases, patch, seed, augment, foreground_prob, use_labels):  # written before perturb existed
        calls.append(seed)
        return PatchSampler(cases, patch, seed=seed, augment=augment, use_labels=use_labels)

    image, label = _lateral_case()
    b = TwoStreamBatcher([(image[None], label)], [], 1, 0, (16, 24, 24), seed=0, sampler_factory=old_factory)
    assert b.next()[0].shape == (1, 1, 16, 24, 24) and calls
    p = TwoStreamBatcher([(image[None], label)], [(image[None], None)], 2, 2, (16, 24, 24), seed=0,
                         perturb="both")
    q = TwoStreamBatcher([(image[None], label)], [(image[None], None)], 2, 2, (16, 24, 24), seed=0)
    draws = [(p.next(), q.next()) for _ in range(10)]
    assert any(not np.array_equal(x[0], y[0]) for x, y in draws)  # the policy reaches the patches


def test_default_is_both_and_a_run_saved_before_the_option_resumes_without_it(tmp_path):
    assert TrainConfig().data.perturb == "both"
    import yaml

    path = save_config(TrainConfig(method="supervised"), tmp_path / "config.yaml")
    assert load_run_config(path).data.perturb == "both"  # saved with the key: kept
    raw = yaml.safe_load(path.read_text())
    raw["data"]["perturb"] = "spatial"
    path.write_text(yaml.safe_dump(raw))
    assert load_run_config(path).data.perturb == "spatial"
    del raw["data"]["perturb"]  # what a run saved before data.perturb existed holds
    path.write_text(yaml.safe_dump(raw))
    assert load_run_config(path).data.perturb == "none"  # it trained on unperturbed patches and resumes so
    assert load_config(path).data.perturb == "both"  # a user's config without the key: today's default
