"""``benchmarks/ensemble.py``: the ensemble's labels are the argmax of the averaged probabilities, background
included as 1 - the foreground sum, mapped to the model's label values."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ensemble import labels_from_probabilities, shared_label_values  # noqa: E402


def test_argmax_with_the_background_and_the_label_values():
    fg = np.zeros((2, 1, 1, 4), dtype=np.float32)
    fg[0, 0, 0] = [0.1, 0.6, 0.3, 0.45]   # class 1
    fg[1, 0, 0] = [0.2, 0.3, 0.5, 0.10]   # class 2 -> background 0.7, 0.1, 0.2, 0.45
    assert labels_from_probabilities(fg, [0, 1, 2]).tolist() == [[[0, 1, 2, 0]]]
    assert labels_from_probabilities(fg, [0, 5, 9]).tolist() == [[[0, 5, 9, 0]]]


def test_models_must_share_their_label_values():
    from types import SimpleNamespace as Card

    assert shared_label_values([Card(label_values=[0, 1, 2]), Card(label_values=["0", "1", "2"])], ["a", "b"]) \
        == [0, 1, 2]
    with pytest.raises(SystemExit, match=r"^error: a.pt, b.pt: the models do not share their label values$"):
        shared_label_values([Card(label_values=[0, 1, 2]), Card(label_values=[0, 1])], ["a.pt", "b.pt"])


def test_one_foreground_class_given_as_a_scalar_volume():
    fg = np.array([[[0.2, 0.5001, 0.9]]], dtype=np.float32)
    assert labels_from_probabilities(fg, [0, 1]).tolist() == [[[0, 1, 1]]]


def test_averaging_two_models_can_change_the_answer():
    a = np.array([[[[0.9, 0.4]]], [[[0.05, 0.5]]]], dtype=np.float32)
    b = np.array([[[[0.2, 0.1]]], [[[0.7, 0.3]]]], dtype=np.float32)
    assert labels_from_probabilities(a, [0, 1, 2]).tolist() == [[[1, 2]]]
    assert labels_from_probabilities(b, [0, 1, 2]).tolist() == [[[2, 0]]]
    # mean: class 1 0.55 / 0.25, class 2 0.375 / 0.4, background 0.075 / 0.35
    assert labels_from_probabilities((a + b) / 2, [0, 1, 2]).tolist() == [[[1, 2]]]


def test_rotation_views_are_the_identity_and_six_turns():
    from ensemble import rotation_views

    assert [n for n, _ in rotation_views(0)] == ["identity"]
    views = rotation_views(10)
    assert [n for n, _ in views] == ["identity", "z+10", "z-10", "y+10", "y-10", "x+10", "x-10"]
    for name, m in views:
        assert np.allclose(m @ m.T, np.eye(3)) and np.isclose(np.linalg.det(m), 1.0)
        kept = {"z": 0, "y": 1, "x": 2}.get(name[0])
        if kept is not None:  # a turn about an axis keeps that coordinate
            assert np.allclose(m[kept], np.eye(3)[kept])
            assert np.isclose(np.degrees(np.arccos((np.trace(m) - 1) / 2)), 10)


def test_a_quarter_turn_is_exact_and_turning_back_restores_the_interior():
    from ensemble import rotate_array

    rng = np.random.default_rng(0)
    cube = rng.random((9, 9, 9)).astype(np.float32)
    quarter = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)  # 90 degrees in the (y, x) plane
    turned = rotate_array(cube, quarter)
    assert np.allclose(turned, np.rot90(cube, k=-1, axes=(1, 2)), atol=1e-6)
    assert np.allclose(rotate_array(turned, quarter.T), cube, atol=1e-6)
    # a smooth volume (a blob) turned by 10 degrees and back: the same up to interpolation, channels kept apart
    z, y, x = np.mgrid[:24, :24, :24]
    blob = np.exp(-((z - 12.0) ** 2 + (y - 9.0) ** 2 + (x - 15.0) ** 2) / 50.0).astype(np.float32)
    stack = np.stack([blob, 1 - blob])
    a = np.deg2rad(10)
    m = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    there = rotate_array(stack, m)
    assert there.shape == stack.shape and np.abs(there - stack).max() > 0.05  # it did turn
    back = rotate_array(there, m.T)
    assert np.abs(back - stack)[:, 6:18, 6:18, 6:18].max() < 0.02  # trilinear twice blurs a little
