"""Schedules (EMA decay, Gaussian warm-up, sigmoid ramp-up, learning rates) against their formulas; EMA update;
two-stream batch assembly (pass-wise reshuffling, sharding equivalence, resumable state)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semisupseg.schedules import consistency_weight, gaussian_warmup, poly_lr, sigmoid_rampup, step_decay_lr
from semisupseg.training.batches import IndexStream, TwoStreamBatcher
from semisupseg.training.config import TrainConfig
from semisupseg.training.ema import ema_decay_at, ema_update, make_teacher
from semisupseg.training.engine import learning_rate


def test_ema_decay_formula():
    for t in (0, 1, 5, 98, 99, 100, 5000):
        assert ema_decay_at(t, 0.99) == pytest.approx(min(1 - 1 / (t + 1), 0.99))
    assert ema_decay_at(0) == 0.0          # the teacher becomes the student after the first step
    assert ema_decay_at(1) == 0.5
    assert ema_decay_at(10_000, 0.999) == 0.999


def test_ema_update_parameters_and_buffers():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    t0 = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(4.0)
    ema_update(teacher, student, 0.9, buffers="keep")
    for before, t, s in zip(t0, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.9 * before + 0.1 * s)
    assert torch.all(teacher[1].running_mean == 0)           # keep: the teacher's own statistics
    ema_update(teacher, student, 0.5, buffers="ema")
    assert torch.allclose(teacher[1].running_mean, torch.full((2,), 2.0))
    ema_update(teacher, student, 0.5, buffers="copy")
    assert torch.allclose(teacher[1].running_mean, torch.full((2,), 4.0))


def test_rampups_against_formulas():
    for it in (0, 149, 150, 3000, 6000, 9000):
        t = min(it // 150, 40) / 40
        assert sigmoid_rampup(it // 150, 40) == pytest.approx(math.exp(-5 * (1 - t) ** 2))
        assert consistency_weight(it, 0.1, "sigmoid", 6000) == pytest.approx(0.1 * math.exp(-5 * (1 - t) ** 2))
        tg = min(it, 6000) / 6000
        assert gaussian_warmup(it, 6000, 0.3) == pytest.approx(0.3 * math.exp(-5 * (1 - tg) ** 2))
        assert consistency_weight(it, 0.3, "gaussian", 6000) == pytest.approx(gaussian_warmup(it, 6000, 0.3))
    assert sigmoid_rampup(5, 0) == 1.0 and consistency_weight(3, 2.0, "constant", 10) == 2.0
    assert gaussian_warmup(6000, 6000) == 1.0 and gaussian_warmup(0, 6000) == pytest.approx(math.exp(-5))
    with pytest.raises(ValueError):
        consistency_weight(0, 1.0, "linear", 10)


def test_learning_rate_schedules():
    cfg = TrainConfig(iterations=6000)
    # release: lr = 0.01 * 0.1 ** (iter // 2500), applied to the step after iteration 2500
    assert [learning_rate(cfg, t) for t in (0, 2499, 2500, 5000)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert step_decay_lr(0.01, 2499) == 0.01
    cfg.optim.schedule = "poly"
    for t in (0, 1000, 5999):
        assert learning_rate(cfg, t) == pytest.approx(0.01 * (1 - t / 6000) ** 0.9)
    assert poly_lr(0.01, 6000, 6000) == 0.0
    cfg.optim.schedule = "constant"
    assert learning_rate(cfg, 5999) == 0.01


def test_index_stream_passes():
    s = IndexStream(5, seed=3, stream=0, drop_last=True)
    first = s.take(2) + s.take(2)
    assert len(set(first)) == 4                      # no repeats inside a pass
    nxt = s.take(2)                                  # the tail (1 case) is dropped, a new pass starts
    assert s.pass_index == 1 and len(set(nxt)) == 2
    u = IndexStream(3, seed=3, stream=1, drop_last=False)
    seq = [i for _ in range(4) for i in u.take(2)]   # 8 indices run over pass boundaries
    assert sorted(seq[:3]) == [0, 1, 2] and sorted(seq[3:6]) == [0, 1, 2]
    state = u.state_dict()
    a = [u.take(2) for _ in range(3)]
    v = IndexStream(3, seed=3, stream=1, drop_last=False)
    v.load_state_dict(state)
    assert [v.take(2) for _ in range(3)] == a


def _cases(n, labeled, rng):
    out = []
    for _ in range(n):
        img = rng.normal(size=(1, 12, 20, 20)).astype(np.float32)
        lab = (rng.random((12, 20, 20)) > 0.5).astype(np.uint8) if labeled else None
        out.append((img, lab))
    return out


def test_two_stream_batches_shard_equivalence_and_resume():
    rng = np.random.default_rng(0)
    lab, unl = _cases(4, True, rng), _cases(3, False, rng)
    kw = dict(labeled_bs=2, unlabeled_bs=2, patch_size_zyx=(8, 16, 16), seed=11)
    single = TwoStreamBatcher(lab, unl, **kw)
    shards = [TwoStreamBatcher(lab, unl, rank=r, world_size=2, **kw) for r in range(2)]
    for _ in range(3):
        img, label = single.next()
        assert img.shape == (4, 1, 8, 16, 16) and label.shape == (2, 8, 16, 16) and label.dtype == np.int64
        parts = [s.next() for s in shards]
        # rank r holds labeled slot r and unlabeled slot r: the same patches as the single process
        assert np.array_equal(parts[0][0][0], img[0]) and np.array_equal(parts[1][0][0], img[1])
        assert np.array_equal(parts[0][0][1], img[2]) and np.array_equal(parts[1][0][1], img[3])
        assert np.array_equal(np.concatenate([parts[0][1], parts[1][1]]), label)
    state = single.state_dict()
    expect = [single.next() for _ in range(2)]
    again = TwoStreamBatcher(lab, unl, **kw)
    again.load_state_dict(state)
    for (ei, el), (gi, gl) in zip(expect, [again.next() for _ in range(2)]):
        assert np.array_equal(ei, gi) and np.array_equal(el, gl)


def test_two_stream_needs_unlabeled_cases():
    rng = np.random.default_rng(1)
    from semisupseg.errors import InputError

    with pytest.raises(InputError, match="no unlabeled cases") as info:
        TwoStreamBatcher(_cases(2, True, rng), [], 1, 1, (8, 8, 8), 0)
    message = str(info.value)  # every way out, for command-line and for Python users
    for way in ("--unlabeled DIR", "data.unlabeled", "--num-labeled N", "data.num_labeled", "--labeled-batch-size",
                "labeled_batch_size = batch_size"):
        assert way in message, way
    assert "\n" not in message
    with pytest.raises(InputError, match="divisible"):
        TwoStreamBatcher(_cases(2, True, rng), _cases(2, False, rng), 1, 1, (8, 8, 8), 0, rank=0, world_size=2)


def test_ramp_scaled_to_the_run():
    """rampup_period 0 ends the staircase ramp with the run: identical to the releases' period 150 (the default) at
    their 6000 iterations; at a 1000-iteration budget the weight reaches the amplitude instead of 0.3 %."""
    from semisupseg.schedules import ramp_period

    for it in (0, 149, 150, 3000, 5999, 6000):
        assert consistency_weight(it, 0.1, "sigmoid", 6000, 0) == consistency_weight(it, 0.1, "sigmoid", 6000, 150)
        assert consistency_weight(it, 0.1, "sigmoid", 6000) == consistency_weight(it, 0.1, "sigmoid", 6000, 150)
    assert ramp_period(0, 1000, 40) == 25 and ramp_period(150, 1000, 40) == 150 and ramp_period(0, 10, 40) == 1
    assert consistency_weight(999, 0.1, "sigmoid", 1000, 150) < 0.003            # the release's ramp at 1000 it
    assert consistency_weight(999, 0.1, "sigmoid", 1000, 0) == pytest.approx(0.1 * math.exp(-5 * (1 / 40) ** 2))
    assert consistency_weight(500, 0.1, "sigmoid", 1000, 0) == pytest.approx(0.1 * math.exp(-5 * 0.5 ** 2))
    with pytest.raises(ValueError):
        ramp_period(-1, 1000, 40)


def test_methods_default_to_the_releases_ramp():
    from semisupseg.methods.dtc import DTCParams
    from semisupseg.methods.entropy_min import EntropyMinParams
    from semisupseg.methods.mean_teacher import MeanTeacherParams

    for cls in (MeanTeacherParams, DTCParams, EntropyMinParams):
        assert cls().rampup_period == 150
        assert cls(rampup_period=0).rampup_period == 0
        with pytest.raises(ValueError):
            cls(rampup_period=-1)
