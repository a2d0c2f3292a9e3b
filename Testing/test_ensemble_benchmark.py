"""``benchmarks/ensemble.py``: the ensemble's labels are the argmax of the averaged probabilities, background
included as 1 - the foreground sum, mapped to the model's label values."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ensemble import labels_from_probabilities  # noqa: E402


def test_argmax_with_the_background_and_the_label_values():
    fg = np.zeros((2, 1, 1, 4), dtype=np.float32)
    fg[0, 0, 0] = [0.1, 0.6, 0.3, 0.45]   # class 1
    fg[1, 0, 0] = [0.2, 0.3, 0.5, 0.10]   # class 2 -> background 0.7, 0.1, 0.2, 0.45
    assert labels_from_probabilities(fg, [0, 1, 2]).tolist() == [[[0, 1, 2, 0]]]
    assert labels_from_probabilities(fg, [0, 5, 9]).tolist() == [[[0, 5, 9, 0]]]


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
