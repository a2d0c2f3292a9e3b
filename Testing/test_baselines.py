"""Unit tests of the baseline methods (mean-teacher, ua-mt, entropy-min, dtc) and their consistency losses.

Loss terms are checked against values computed by hand on tiny tensors; the methods' ``step`` against the formulas of
their weights at a given iteration.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from semisupseg.losses.consistency import (certainty_mask, dual_task_consistency, entropy_minimization_loss,
                                           mean_teacher_consistency, masked_consistency, predictive_entropy,
                                           uncertainty_threshold)
from semisupseg.methods import get_method
from semisupseg.methods.base import Batch, StepContext
from semisupseg.methods.mean_teacher import labeled_segmentation_terms, teacher_input_noise
from semisupseg.methods.uamt import mc_dropout_mean_probability
from semisupseg.nets import VNet, VNetConfig
from semisupseg.schedules import gaussian_warmup

BASELINES = ("mean-teacher", "ua-mt", "entropy-min", "dtc")

# fg probabilities of 8 voxels (a 1x1x2x2x2 map) for the hand-computed examples
P_S = [0.9, 0.1, 0.5, 0.5, 0.7, 0.3, 1.0, 0.0]
P_T = [0.8, 0.3, 0.5, 0.1, 0.7, 0.6, 0.5, 0.0]


def two_class(fg):
    """(1, 2, 2, 2, 2) probabilities [1 - p, p] from 8 foreground values."""
    p = torch.tensor(fg, dtype=torch.float64).reshape(1, 1, 2, 2, 2)
    return torch.cat([1 - p, p], dim=1)


# --------------------------------------------------------------------------------------------------------------
# loss terms against hand-computed values


def test_mean_teacher_consistency_hand_value():
    # squared differences per voxel: .01 .04 0 .16 0 .09 .25 0 (sum .55), the same in both class channels
    value = mean_teacher_consistency(two_class(P_S), two_class(P_T))
    assert float(value) == pytest.approx(2 * 0.55 / 16, abs=1e-7)


def test_masked_consistency_hand_value_and_empty_mask():
    mask = torch.tensor([1, 1, 1, 0, 1, 0, 0, 1], dtype=torch.float32).reshape(1, 1, 2, 2, 2)
    # certain voxels' squared differences .01 .04 0 0 0 in both channels -> 0.1 over C * 5 = 10 entries
    value = masked_consistency(two_class(P_S), two_class(P_T), mask)
    assert float(value) == pytest.approx(0.01, abs=1e-7)
    assert float(masked_consistency(two_class(P_S), two_class(P_T), torch.zeros_like(mask))) == 0.0
    with pytest.raises(ValueError):
        masked_consistency(two_class(P_S), two_class(P_T), mask.repeat(1, 2, 1, 1, 1))


def test_predictive_entropy_hand_values():
    prob = two_class([0.5, 1.0, 0.9, 0.1, 0.5, 0.5, 0.0, 0.2])
    u = predictive_entropy(prob)
    assert u.shape == (1, 1, 2, 2, 2)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325083
    h02 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    expected = [math.log(2), 0.0, h09, h09, math.log(2), math.log(2), 0.0, h02]
    assert u.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_uncertainty_threshold_follows_release_ramp():
    ln2 = math.log(2)
    assert uncertainty_threshold(0, 6000) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln2)
    assert uncertainty_threshold(3000, 6000) == pytest.approx((0.75 + 0.25 * math.exp(-1.25)) * ln2)
    assert uncertainty_threshold(6000, 6000) == pytest.approx(ln2)
    assert uncertainty_threshold(9000, 6000) == pytest.approx(ln2)
    assert uncertainty_threshold(6000, 6000, num_classes=3) == pytest.approx(math.log(3))


def test_certainty_mask_is_strictly_below_threshold():
    u = torch.tensor([0.1, 0.5, 0.6, 0.69]).reshape(1, 1, 4, 1, 1)
    assert certainty_mask(u, 0.5).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    assert certainty_mask(u, 0.7).flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_entropy_minimization_hand_values():
    prob = two_class([0.5, 0.9, 0.5, 0.9, 1.0, 0.0, 0.5, 0.1])
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    nats = (3 * math.log(2) + 3 * h09) / 8
    assert float(entropy_minimization_loss(prob, normalize=False)) == pytest.approx(nats, abs=1e-6)
    assert float(entropy_minimization_loss(prob)) == pytest.approx(nats / math.log(2), abs=1e-6)
    # three classes: the uniform distribution has entropy 1 in base 3
    uniform = torch.full((1, 3, 2, 2, 2), 1 / 3)
    assert float(entropy_minimization_loss(uniform)) == pytest.approx(1.0, abs=1e-6)


def test_entropy_minimization_gradient_sharpens():
    logits = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1, 1).requires_grad_(True)
    entropy_minimization_loss(torch.softmax(logits, dim=1)).backward()
    # descending the gradient widens the margin of the larger logit
    assert logits.grad[0, 0].item() < 0 < logits.grad[0, 1].item()


def test_dual_task_consistency_hand_value():
    sdm = torch.tensor([-0.5, 0.5, 0.0, 0.001]).reshape(1, 1, 4, 1, 1)
    fg = torch.tensor([0.9, 0.2, 0.5, 0.2]).reshape(1, 1, 4, 1, 1)
    prob = torch.cat([1 - fg, fg], dim=1)
    h = 1 / (1 + math.exp(1.5))  # sigmoid(-1500 * 0.001)
    expected = (0.1 ** 2 + 0.2 ** 2 + 0.0 + (0.2 - h) ** 2) / 4
    assert float(dual_task_consistency(prob, sdm)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):
        dual_task_consistency(prob, sdm.repeat(1, 2, 1, 1, 1))


def test_dual_task_consistency_multiclass_compares_each_foreground_class():
    prob = torch.tensor([0.2, 0.3, 0.5]).reshape(1, 3, 1, 1, 1)
    sdm = torch.tensor([-1.0, 1.0]).reshape(1, 2, 1, 1, 1)  # class 1 inside (H=1), class 2 outside (H=0)
    expected = ((0.3 - 1.0) ** 2 + (0.5 - 0.0) ** 2) / 2
    assert float(dual_task_consistency(prob, sdm)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seg_form", ["softmax", "sigmoid"])
def test_labeled_segmentation_terms_hand_value(seg_form):
    # voxel a: p1 = 0.75, label 1; voxel b: p1 = 0.5, label 0
    if seg_form == "softmax":
        logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]).reshape(1, 2, 1, 1, 2)
    else:
        logits = torch.tensor([math.log(3), 0.0]).reshape(1, 1, 1, 1, 2)
    labels = torch.tensor([1, 0]).reshape(1, 1, 1, 2)
    losses, logs = labeled_segmentation_terms(logits, labels, seg_form, 0.5, 0.5)
    ce = (-math.log(0.75) - math.log(0.5)) / 2
    dice = 1 - (2 * 0.75 + 1e-5) / (0.75 ** 2 + 0.5 ** 2 + 1 + 1e-5)
    assert logs["ce_raw"] == pytest.approx(ce, abs=1e-6)
    assert logs["dice_raw"] == pytest.approx(dice, abs=1e-6)
    assert float(losses["ce"]) == pytest.approx(0.5 * ce, abs=1e-6)
    assert float(losses["dice"]) == pytest.approx(0.5 * dice, abs=1e-6)
    losses, _ = labeled_segmentation_terms(logits, labels, seg_form, 0.0, 1.0)
    assert set(losses) == {"dice"}


# --------------------------------------------------------------------------------------------------------------
# teacher noise, Monte-Carlo passes, gradients


def _clamped_normal_std(std: float, clip: float) -> float:
    a = clip / std
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    tail = 1 - 0.5 * (1 + math.erf(a / math.sqrt(2)))  # P(Z > a)
    inner = (1 - 2 * tail) - 2 * a * phi  # E[Z^2; |Z| < a]
    return std * math.sqrt(inner + 2 * tail * a * a)


def test_teacher_noise_statistics_and_reproducibility():
    x = torch.zeros(4, 1, 64, 64, 64)
    noise = teacher_input_noise(x, torch.Generator().manual_seed(7))
    assert noise.shape == x.shape and noise.dtype == x.dtype
    assert float(noise.abs().max()) <= 0.2 + 1e-7
    assert abs(float(noise.mean())) < 1e-3
    assert float(noise.std()) == pytest.approx(_clamped_normal_std(0.1, 0.2), rel=5e-3)  # 0.0959
    clipped = float((noise.abs() >= 0.2 - 1e-7).float().mean())
    assert clipped == pytest.approx(math.erfc(2 / math.sqrt(2)), rel=0.05)  # P(|N(0,1)| > 2) = 0.0455
    again = teacher_input_noise(x, torch.Generator().manual_seed(7))
    other = teacher_input_noise(x, torch.Generator().manual_seed(8))
    assert torch.equal(noise, again) and not torch.equal(noise, other)


class _EchoTeacher(nn.Module):
    """Returns the input as the foreground logit of a softmax pair; records each forward's batch size."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout3d(0.5)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], self.drop.training))
        return {"seg": torch.cat([torch.zeros_like(x), x], dim=1)}


def test_mc_dropout_batches_like_the_release_and_keeps_samples_apart():
    teacher = _EchoTeacher().eval()
    image = torch.stack([torch.full((1, 2, 2, 2), v) for v in (-1.0, 0.0, 2.0)])  # 3 distinct samples
    mean = mc_dropout_mean_probability(teacher, image, "softmax", torch.Generator().manual_seed(0), passes=8,
                                       repeats=2, noise_std=0.0)
    # T // repeats forwards of repeats * B images, dropout forced on during the passes and restored after
    assert teacher.calls == [(6, True)] * 4
    assert not teacher.drop.training
    expected = torch.sigmoid(torch.tensor([-1.0, 0.0, 2.0]))
    assert torch.allclose(mean[:, 1, 0, 0, 0], expected, atol=1e-6)
    assert torch.allclose(mean.sum(dim=1), torch.ones(3, 2, 2, 2), atol=1e-6)
    with pytest.raises(ValueError):
        mc_dropout_mean_probability(teacher, image, "softmax", torch.Generator(), passes=7, repeats=2)


def test_mc_dropout_noise_averages_over_passes():
    teacher = _EchoTeacher()
    image = torch.zeros(1, 1, 8, 8, 8)
    one = mc_dropout_mean_probability(teacher, image, "softmax", torch.Generator().manual_seed(0), passes=1,
                                      repeats=1)
    many = mc_dropout_mean_probability(teacher, image, "softmax", torch.Generator().manual_seed(0), passes=8,
                                       repeats=2)
    # averaging 8 noisy passes shrinks the spread of the mean probability around sigmoid(0) = 0.5
    assert float((many[:, 1] - 0.5).std()) < 0.6 * float((one[:, 1] - 0.5).std())


def _tiny_model(method_cls, num_classes=2, seg_form="softmax", dropout=None, seed=0):
    torch.manual_seed(seed)
    cfg = VNetConfig(num_classes=num_classes, seg_form=seg_form, sdm_head=method_cls.needs_sdm, n_filters=2,
                     dropout=method_cls.needs_dropout if dropout is None else dropout)
    return VNet(cfg)


def _ctx(method_cls, model, iteration=3000, max_iterations=6000, num_classes=2, seg_form="softmax", seed=1):
    from semisupseg.training.ema import make_teacher

    teacher = make_teacher(model) if method_cls.uses_teacher else None
    return StepContext(iteration=iteration, max_iterations=max_iterations, device=torch.device("cpu"),
                       num_classes=num_classes, seg_form=seg_form, generator=torch.Generator().manual_seed(seed),
                       teacher=teacher)


def _batch(num_classes=2, batch=4, labeled=2, size=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, size, size, size, generator=g)
    label = torch.zeros(labeled, size, size, size, dtype=torch.long)
    for c in range(1, num_classes):  # nested boxes so every class is present
        lo, hi = 2 + 2 * (c - 1), size - 2 - 2 * (c - 1)
        label[:, lo:hi, lo:hi, lo:hi] = c
    return Batch(image=image, label=label, labeled_bs=labeled)


@pytest.mark.parametrize("name", ["mean-teacher", "ua-mt"])
def test_no_gradient_reaches_the_teacher(name):
    cls = get_method(name)
    model = _tiny_model(cls)
    ctx = _ctx(cls, model, iteration=6000)
    before = [p.detach().clone() for p in ctx.teacher.parameters()]
    result = cls().step(model, _batch(), ctx)
    assert result.losses["consistency"].requires_grad
    result.losses["consistency"].backward()
    assert all(p.grad is None for p in ctx.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.teacher.parameters()))
    # the consistency alone moves the student
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


# --------------------------------------------------------------------------------------------------------------
# each method's step: finite weighted terms with the right names and weights


EXPECTED_TERMS = {
    "mean-teacher": {"ce", "dice", "consistency"},
    "ua-mt": {"ce", "dice", "consistency"},
    "entropy-min": {"ce", "dice", "entropy"},
    "dtc": {"dice", "sdm", "consistency"},
}
AMPLITUDE = {"mean-teacher": 0.1, "ua-mt": 0.1, "entropy-min": 0.1, "dtc": 1.0}


def test_registry_and_flags():
    flags = {name: (get_method(name).uses_teacher, get_method(name).needs_dropout, get_method(name).needs_sdm)
             for name in BASELINES}
    assert flags == {"mean-teacher": (True, True, False), "ua-mt": (True, True, False),
                     "entropy-min": (False, False, False), "dtc": (False, True, True)}
    for name in BASELINES:
        cls = get_method(name)
        assert cls.name == name and cls.description and cls.__doc__
        with pytest.raises(ValueError):
            cls.make_params({"no_such_parameter": 1})


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("seg_form,num_classes", [("softmax", 2), ("sigmoid", 2), ("softmax", 3)])
def test_step_terms_and_weights(name, seg_form, num_classes):
    cls = get_method(name)
    model = _tiny_model(cls, num_classes, seg_form)
    ctx = _ctx(cls, model, iteration=3000, num_classes=num_classes, seg_form=seg_form)
    result = cls().step(model, _batch(num_classes), ctx)
    assert set(result.losses) == EXPECTED_TERMS[name]
    assert all(torch.isfinite(v) and v.dim() == 0 for v in result.losses.values())
    logs = result.logs
    assert all(math.isfinite(v) for v in logs.values())
    ramp = AMPLITUDE[name] * math.exp(-5 * (1 - 20 / 40) ** 2)  # a * sigmoid_rampup(3000 // 150, 40)
    term = "entropy" if name == "entropy-min" else "consistency"
    assert logs[f"{term}_weight"] == pytest.approx(ramp)
    assert result.losses[term].item() == pytest.approx(ramp * logs[f"{term}_raw"], rel=1e-5, abs=1e-9)
    if name == "dtc":
        assert result.losses["dice"].item() == pytest.approx(logs["dice_raw"], rel=1e-5)
        assert result.losses["sdm"].item() == pytest.approx(0.3 * logs["sdm_raw"], rel=1e-5)
    else:
        assert result.losses["ce"].item() == pytest.approx(0.5 * logs["ce_raw"], rel=1e-5)
        assert result.losses["dice"].item() == pytest.approx(0.5 * logs["dice_raw"], rel=1e-5)
    if name == "ua-mt":
        expected = (0.75 + 0.25 * math.exp(-5 * 0.25)) * math.log(num_classes)  # sigmoid_rampup(3000, 6000)
        assert logs["threshold"] == pytest.approx(expected)
        assert 0.0 <= logs["mask_fraction"] <= 1.0
    total = sum(result.losses.values())
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", BASELINES)
def test_gaussian_rampup_option(name):
    cls = get_method(name)
    key = "rampup" if name == "entropy-min" else "consistency_rampup"
    method = cls(cls.make_params({key: "gaussian"}))
    model = _tiny_model(cls)
    result = method.step(model, _batch(), _ctx(cls, model, iteration=1500, max_iterations=6000))
    term = "entropy" if name == "entropy-min" else "consistency"
    assert result.logs[f"{term}_weight"] == pytest.approx(gaussian_warmup(1500, 6000, AMPLITUDE[name]))
    with pytest.raises(ValueError):
        cls.make_params({key: "linear"})


def test_mean_teacher_consistency_set_selection():
    cls = get_method("mean-teacher")
    model = _tiny_model(cls, dropout=False)
    labeled_only = _batch(batch=2, labeled=2)
    result = cls().step(model, labeled_only, _ctx(cls, model))
    assert result.losses["consistency"].item() == 0.0  # no unlabeled patch: nothing to be consistent about
    method = cls(cls.make_params({"consistency_on": "all"}))
    result = method.step(model, labeled_only, _ctx(cls, model))
    assert result.logs["consistency_raw"] > 0.0


def test_mean_teacher_matches_release_formula():
    """With a teacher identical to the student and no dropout, the release's consistency is the mean squared
    difference of softmax outputs between clean and noisy unlabeled inputs."""
    cls = get_method("mean-teacher")
    model = _tiny_model(cls, dropout=False)
    batch = _batch()
    ctx = _ctx(cls, model, seed=11)
    result = cls().step(model, batch, ctx)
    with torch.no_grad():
        student = torch.softmax(model(batch.image)["seg"], dim=1)[2:]
        noise = torch.clamp(torch.randn(batch.unlabeled_image.shape, generator=torch.Generator().manual_seed(11))
                            * 0.1, -0.2, 0.2)
        teacher = torch.softmax(ctx.teacher(batch.unlabeled_image + noise)["seg"], dim=1)
    assert result.logs["consistency_raw"] == pytest.approx(float(((student - teacher) ** 2).mean()), rel=1e-4)


def test_dtc_matches_release_formula_for_the_sigmoid_head():
    cls = get_method("dtc")
    model = _tiny_model(cls, seg_form="sigmoid", dropout=False)
    batch = _batch()
    result = cls().step(model, batch, _ctx(cls, model, seg_form="sigmoid"))
    with torch.no_grad():
        out = model(batch.image)
        release = torch.mean((torch.sigmoid(-1500 * out["sdm"]) - torch.sigmoid(out["seg"])) ** 2)
    assert result.logs["consistency_raw"] == pytest.approx(float(release), rel=1e-4)


def test_dtc_needs_the_sdm_head():
    cls = get_method("dtc")
    torch.manual_seed(0)
    plain = VNet(VNetConfig(n_filters=2))
    with pytest.raises(RuntimeError, match="SDM head"):
        cls().step(plain, _batch(), _ctx(cls, plain))


def test_teacher_methods_need_a_teacher():
    cls = get_method("ua-mt")
    model = _tiny_model(cls)
    ctx = _ctx(cls, model)
    ctx.teacher = None
    with pytest.raises(RuntimeError, match="teacher"):
        cls().step(model, _batch(), ctx)


def test_uamt_params_validation():
    cls = get_method("ua-mt")
    with pytest.raises(ValueError):
        cls.make_params({"mc_passes": 7})
    assert cls.make_params({"mc_passes": 6, "mc_repeats": 3}).mc_passes == 6


def test_supervised_step_uses_the_labeled_patches_only_with_the_shared_labeled_term():
    """``supervised``: Dice (+ CE when weighted) of the labeled patches, the same term and logs as the baselines'."""
    from semisupseg.losses.segmentation import cross_entropy, multiclass_dice_loss

    cls = get_method("supervised")
    model = _tiny_model(cls).eval()  # eval: no BN batch statistics, so one forward equals another
    batch = _batch(batch=2, labeled=2)
    ctx = _ctx(cls, model)
    logits = model(batch.image)["seg"]
    dice = multiclass_dice_loss(torch.softmax(logits, dim=1), batch.label)
    ce = cross_entropy(logits, batch.label)
    result = cls().step(model, batch, ctx)
    assert set(result.losses) == {"dice"}
    assert float(result.losses["dice"].detach()) == pytest.approx(float(dice.detach()), abs=1e-6)
    assert result.logs["dice_raw"] == pytest.approx(float(dice.detach()), abs=1e-6)
    weighted = cls(cls.make_params({"ce_weight": 0.5, "dice_weight": 0.5})).step(model, batch, ctx)
    assert float(weighted.losses["ce"].detach()) == pytest.approx(0.5 * float(ce.detach()), abs=1e-6)
    assert float(weighted.losses["dice"].detach()) == pytest.approx(0.5 * float(dice.detach()), abs=1e-6)
    with pytest.raises(ValueError, match="nothing to train"):
        cls(cls.make_params({"ce_weight": 0.0, "dice_weight": 0.0})).step(model, batch, ctx)
