"""Loss-weight ramps of the reference papers, written once (used by the engine and by the methods)."""
from __future__ import annotations

import math


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)``; 1 when ``rampup_length == 0``.

    The ramp of Laine & Aila used by UA-MT/SASSNet/DTC, called there as ``sigmoid_rampup(iter // 150, 40)``.
    """
    if rampup_length == 0:
        return 1.0
    t = min(max(float(current), 0.0), float(rampup_length)) / float(rampup_length)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def gaussian_warmup(iteration: float, max_iterations: float, amplitude: float = 1.0) -> float:
    """``w(t) = a * exp(-5 (1 - t / t_max)^2)``, ``t`` clipped to ``[0, t_max]`` (SASSNet β(t), SB-Net γ(t), SGRS eq. 20)."""
    if max_iterations <= 0:
        return float(amplitude)
    t = min(max(float(iteration), 0.0), float(max_iterations)) / float(max_iterations)
    return float(amplitude * math.exp(-5.0 * (1.0 - t) ** 2))


def ramp_period(rampup_period: int, max_iterations: int, rampup_length: float) -> int:
    """Iterations per ramp step of the releases' staircase ramp ``sigmoid_rampup(it // period, length)``.

    ``rampup_period > 0`` is taken as is (the releases and our default: 150). ``0`` scales the ramp to the run:
    ``period = max(1, round(max_iterations / rampup_length))``, so the ramp ends with the run as it does in the
    releases at their budget (6000 iterations / 40 = 150, identical there). With the fixed 150 a 1000-iteration run
    stops at ``sigmoid_rampup(6, 40) = 0.027`` of the weight: the unlabeled term hardly acts. Measured on LA
    (``benchmarks/RESULTS.md``, mean-teacher, 1000 iterations, held-out test scans): letting it act (``0``) scored
    lower than the releases' ramp, which is why 150 stays the default.
    """
    if rampup_period > 0:
        return int(rampup_period)
    if rampup_period < 0:
        raise ValueError(f"rampup_period must be >= 0 (0: scaled to the run), got {rampup_period}")
    return max(1, int(round(max_iterations / rampup_length))) if rampup_length > 0 else 1


def consistency_weight(iteration: int, amplitude: float, rampup: str, max_iterations: int,
                       rampup_period: int = 150, rampup_length: float = 40.0) -> float:
    """A loss weight ramped as selected: ``"sigmoid"`` (release: ``a * sigmoid_rampup(it // period, 40)``, period
    150 as in the releases, or scaled to the run with 0: :func:`ramp_period`), ``"gaussian"``
    (``gaussian_warmup(it, max_iterations, a)``) or ``"constant"`` (``a``)."""
    if rampup == "sigmoid":
        period = ramp_period(rampup_period, max_iterations, rampup_length)
        return float(amplitude * sigmoid_rampup(iteration // period, rampup_length))
    if rampup == "gaussian":
        return gaussian_warmup(iteration, max_iterations, amplitude)
    if rampup == "constant":
        return float(amplitude)
    raise ValueError(f"unknown ramp-up {rampup!r}: expected sigmoid, gaussian or constant")


def step_decay_lr(base_lr: float, iteration: int, step: int = 2500, gamma: float = 0.1) -> float:
    """The papers' learning rate: ``base_lr * gamma ** (iteration // step)``."""
    return float(base_lr * gamma ** (iteration // step))


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """Polynomial decay ``base_lr * (1 - iteration / max_iterations) ** power``."""
    return float(base_lr * (1.0 - min(iteration, max_iterations) / max(max_iterations, 1)) ** power)
