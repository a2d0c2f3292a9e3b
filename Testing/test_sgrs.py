"""SGRS-Net: region losses against hand-computed values, MixUp, pseudo labels, regions, gradients, one step."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats

from semisupseg.geometry import REGION_AGREE, REGION_DISAGREE, REGION_UNCERTAIN
from semisupseg.losses.regional import (consistent_region_loss, masked_cross_entropy, noise_robust_region_loss,
                                        region_soft_dice)
from semisupseg.methods import get_method
from semisupseg.methods.base import Batch, StepContext
from semisupseg.methods.sgrs import SGRS, SGRSParams, mix_images, mixup_lambda, sample_beta
from semisupseg.nets import VNet


def _logits_two_voxels() -> torch.Tensor:
    # voxel 0: softmax [0.25, 0.75]; voxel 1: [0.5, 0.5]   shape (B=1, C=2, Z=1, Y=1, X=2)
    return torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]).view(1, 2, 1, 1, 2)


def test_masked_cross_entropy_hand_values():
    logits = _logits_two_voxels()
    labels = torch.tensor([1, 0]).view(1, 1, 1, 2)
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    ce0 = -math.log(0.75)
    assert masked_cross_entropy(logits, labels, mask).item() == pytest.approx(ce0 / 2, rel=1e-6)  # volume
    assert masked_cross_entropy(logits, labels, mask, normalization="region").item() == pytest.approx(ce0, rel=1e-6)
    # label smoothing ε = 0.2, C = 2: target [0.1, 0.9]
    ls0 = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    assert masked_cross_entropy(logits, labels, mask, 0.2, "region").item() == pytest.approx(ls0, rel=1e-6)
    full = torch.ones(1, 1, 1, 2)
    ls1 = -(0.9 * math.log(0.5) + 0.1 * math.log(0.5))
    assert masked_cross_entropy(logits, labels, full, 0.2).item() == pytest.approx((ls0 + ls1) / 2, rel=1e-6)
    assert masked_cross_entropy(logits, labels, torch.zeros(1, 1, 1, 2), 0.0, "region").item() == 0.0
    with pytest.raises(ValueError):
        masked_cross_entropy(logits, labels, mask, normalization="nope")


def test_region_soft_dice_hand_values_with_eta():
    # one sample, 2 classes, 3 voxels; mask keeps voxels 0 and 1
    p1 = torch.tensor([0.8, 0.3, 0.6])
    prob = torch.stack([1 - p1, p1]).view(1, 2, 1, 1, 3)
    labels = torch.tensor([1, 0, 1]).view(1, 1, 1, 3)
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    for eta in (1.0, 20.0):
        # class 1: tp = 0.8, Σp = 1.1, Σg = 1 ; class 0: tp = 0.7, Σp = 0.2 + 0.7 = 0.9, Σg = 1
        d1 = (2 * 0.8 + eta) / (1.1 + 1.0 + eta)
        d0 = (2 * 0.7 + eta) / (0.9 + 1.0 + eta)
        expected = 1 - (d0 + d1) / 2
        assert region_soft_dice(prob, labels, mask, eta).item() == pytest.approx(expected, rel=1e-5)
    # large η makes the loss of a small noisy region small; an empty region costs 0
    assert region_soft_dice(prob, labels, mask, 20.0) < region_soft_dice(prob, labels, mask, 1.0)
    assert region_soft_dice(prob, labels, torch.zeros_like(mask), 20.0).item() == pytest.approx(0.0, abs=1e-6)
    # foreground only
    d1 = (2 * 0.8 + 1.0) / (1.1 + 1.0 + 1.0)
    assert region_soft_dice(prob, labels, mask, 1.0, include_background=False).item() == pytest.approx(1 - d1, rel=1e-5)


def test_region_losses_compose_ce_and_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 2, 3, 4)
    labels = torch.randint(0, 2, (2, 2, 3, 4))
    mask = torch.rand(2, 2, 3, 4) > 0.4
    prob = torch.softmax(logits, 1)
    con = consistent_region_loss(logits, labels, mask, 1.0)
    assert con.item() == pytest.approx((masked_cross_entropy(logits, labels, mask)
                                        + region_soft_dice(prob, labels, mask, 1.0)).item(), rel=1e-6)
    nr = noise_robust_region_loss(logits, labels, mask, 0.2, 20.0)
    assert nr.item() == pytest.approx((masked_cross_entropy(logits, labels, mask, 0.2)
                                       + region_soft_dice(prob, labels, mask, 20.0)).item(), rel=1e-6)


def test_mixup_lambda_and_seeded_beta():
    b = torch.tensor([0.1, 0.5, 0.7, 0.98])
    assert torch.allclose(mixup_lambda(b), torch.tensor([0.9, 0.5, 0.7, 0.98]))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, a2 = sample_beta(4000, 0.75, g1), sample_beta(4000, 0.75, g2)
    assert torch.equal(a, a2)  # reproducible from the generator
    assert stats.kstest(a.numpy(), stats.beta(0.75, 0.75).cdf).pvalue > 1e-3
    lam = mixup_lambda(a)
    assert float(lam.min()) >= 0.5 and float(lam.max()) <= 1.0
    u, l = torch.full((2, 1, 2, 2, 2), 2.0), torch.zeros(2, 1, 2, 2, 2)
    mixed = mix_images(u, l, torch.tensor([0.75, 0.5]))
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 1.5)) and torch.allclose(mixed[1], torch.ones_like(mixed[1]))


def _setup(n_filters=2, seed=0, shape=(16, 16, 16), n_l=2, n_u=2):
    torch.manual_seed(seed)
    net = VNet(n_filters=n_filters)
    teacher = copy.deepcopy(net)
    for prm in teacher.parameters():
        prm.requires_grad_(False)
    image = torch.randn(n_l + n_u, 1, *shape)
    label = torch.zeros(n_l, *shape, dtype=torch.long)
    label[:, 4:12, 4:12, 4:12] = 1
    batch = Batch(image, label, n_l)
    ctx = StepContext(iteration=10, max_iterations=100, device=torch.device("cpu"), num_classes=2,
                      seg_form="softmax", generator=torch.Generator().manual_seed(seed), teacher=teacher)
    return net, teacher, batch, ctx


def test_registered_and_params():
    assert get_method("sgrs") is SGRS
    assert SGRS.uses_teacher
    p = SGRS.make_params({"tau": 0.2})
    assert p.tau == 0.2 and p.label_smoothing == 0.2 and p.nr_dice_smooth == 20.0 and p.mixup_alpha == 0.75
    with pytest.raises(ValueError):
        SGRS.make_params({"nope": 1})


def test_step_finite_regions_partition_and_gradients():
    net, teacher, batch, ctx = _setup()
    method = SGRS()
    method.build(net, 2, 1)
    result = method.step(net, batch, ctx)
    assert set(result.losses) == {"supervised", "consistent", "noise_robust"}
    for value in result.losses.values():
        assert torch.isfinite(value) and value.requires_grad
    fr = result.logs
    assert fr["region_delta"] + fr["region_omega"] + fr["region_theta"] == pytest.approx(1.0)
    assert 0.5 <= fr["mixup_lambda"] <= 1.0
    assert fr["lambda_t"] == pytest.approx(math.exp(-5 * (1 - 10 / 100) ** 2))
    sum(result.losses.values()).backward()
    assert all(prm.grad is None for prm in teacher.parameters())
    assert all(prm.grad is not None and torch.isfinite(prm.grad).all() for prm in net.parameters())


class _ConstantTeacher(torch.nn.Module):
    """A 'teacher' that predicts class ``cls`` everywhere with high confidence."""

    def __init__(self, cls: int):
        super().__init__()
        self.cls = cls
        self.calls = 0

    def forward(self, x, features=False):
        self.calls += 1
        seg = torch.zeros(x.shape[0], 2, *x.shape[2:])
        seg[:, self.cls] = 10.0
        return {"seg": seg}


def test_pseudo_labels_come_from_the_teacher():
    net, _, batch, ctx = _setup()
    method = SGRS()
    for cls in (0, 1):
        ctx.teacher = _ConstantTeacher(cls)
        result = method.step(net, batch, ctx)
        assert ctx.teacher.calls == 1  # one teacher forward (unlabeled only)
        assert result.logs["pseudo_fg"] == float(cls)
    y = method.pseudo_labels(_ConstantTeacher(1), batch.unlabeled_image, "softmax")
    assert y.shape == (2, 16, 16, 16) and bool((y == 1).all())


def test_paper_not_release_quirk_delta_excluded():
    """With a student so uncertain that every voxel is Δ, the unlabeled terms carry no CE (the release's Ω CE would)."""
    net, _, batch, ctx = _setup()
    for prm in net.seg_head.parameters():
        torch.nn.init.zeros_(prm)  # logits 0 → p = 0.5 → base-10 entropy 0.301 > τ everywhere
    result = SGRS().step(net, batch, ctx)
    assert result.logs["region_delta"] == pytest.approx(1.0)
    assert result.logs["loss_con"] == pytest.approx(0.0, abs=1e-6)
    assert result.logs["loss_nr"] == pytest.approx(0.0, abs=1e-6)


def test_single_student_forward_and_reproducible_step():
    calls = []
    net, teacher, batch, ctx = _setup()
    handle = net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    r1 = SGRS().step(net, batch, ctx)
    handle.remove()
    assert calls == [6]  # concat([L, U, U_M]) in one forward
    net2, _, batch2, ctx2 = _setup()
    r2 = SGRS().step(net2, batch2, ctx2)
    assert r1.logs["mixup_lambda"] == r2.logs["mixup_lambda"]
    assert r1.losses["supervised"].item() == pytest.approx(r2.losses["supervised"].item())


def test_regions_overlay_any_shape_and_no_side_effects():
    net, _, batch, ctx = _setup()
    method = SGRS()
    method.step(net, batch, ctx)  # remembers a labeled partner patch
    net.train()
    bn = net.block_one.conv[1]
    before = bn.running_mean.clone()
    codes = method.regions(net, torch.randn(1, 18, 21, 13), ctx)  # (C, Z, Y, X) larger than the patch: windows
    assert codes.shape == (1, 18, 21, 13) and codes.dtype == np.uint8
    assert set(np.unique(codes)) <= {REGION_UNCERTAIN, REGION_AGREE, REGION_DISAGREE}
    assert net.training and torch.equal(bn.running_mean, before)
    codes = SGRS().regions(net, torch.randn(1, 18, 21, 13), ctx)  # no training patch yet: one padded forward
    assert codes.shape == (1, 18, 21, 13)
    assert set(np.unique(codes)) <= {REGION_UNCERTAIN, REGION_AGREE, REGION_DISAGREE}
    assert net.training and torch.equal(bn.running_mean, before)
    same = method.regions(net, batch.unlabeled_image[:1], ctx)  # training patch shape: the labeled partner
    assert same.shape == (1, 16, 16, 16)
    # partner == image: MixUp is the identity, so the two views agree and Θ is empty
    img = batch.unlabeled_image[:1]
    ident = method.regions(net, img, ctx, partner=img)
    assert not (ident == REGION_DISAGREE).any()
    with pytest.raises(ValueError):
        method.regions(net, torch.randn(1, 1, 16, 16, 16), ctx, partner=torch.randn(1, 1, 8, 8, 8))


def test_sigmoid_head_form():
    net, teacher, batch, ctx = _setup()
    net = VNet(n_filters=2, seg_form="sigmoid")
    ctx.teacher = copy.deepcopy(net)
    ctx.seg_form = "sigmoid"
    result = SGRS(SGRSParams(rampup="sigmoid")).step(net, batch, ctx)
    assert all(torch.isfinite(v) for v in result.losses.values())


def _train_tiny(method: str, la_dir, tmp_path, iterations: int = 5):
    """A few iterations of ``method`` on 2 labeled + 2 unlabeled real LA cases; returns the iteration events."""
    import json

    from semisupseg.training.config import DataConfig, ModelConfig, TrainConfig
    from semisupseg.training.engine import Trainer

    cfg = TrainConfig(method=method, out=str(tmp_path / method), iterations=iterations, batch_size=4,
                      labeled_batch_size=2, seed=3, device="cpu", amp="off", val_every=10 ** 6, save_every=10 ** 6,
                      data=DataConfig(labeled=str(la_dir), num_labeled=2, max_unlabeled=2, validation=0,
                                      patch_size=[32, 32, 16], foreground_prob=0.5,
                                      # the patches these 5-step checks were written against (the old default)
                                      augment="papers"),
                      model=ModelConfig(n_filters=4))
    result = Trainer(cfg, handle_signals=False).run()
    assert result.status == "finished" and result.iteration == iterations
    events = [json.loads(line) for line in (tmp_path / method / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e.get("event") == "iteration"]


@pytest.mark.slow
def test_sgrs_trains_end_to_end_on_la(la_dir, tmp_path):
    steps = _train_tiny("sgrs", la_dir, tmp_path)
    assert len(steps) == 5
    for e in steps:
        assert all(math.isfinite(v) for v in e["losses"].values())
        assert e["logs"]["region_delta"] + e["logs"]["region_omega"] + e["logs"]["region_theta"] == pytest.approx(1.0)
    sup = [e["losses"]["supervised"] for e in steps]
    assert np.mean(sup[-2:]) < np.mean(sup[:2])


def test_three_classes_step():
    torch.manual_seed(0)
    net = VNet(n_filters=2, num_classes=3)
    label = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    label[:, 2:8] = 1
    label[:, 8:12] = 2
    ctx = StepContext(5, 10, torch.device("cpu"), 3, "softmax", torch.Generator().manual_seed(0),
                      teacher=copy.deepcopy(net))
    result = SGRS().step(net, Batch(torch.randn(4, 1, 16, 16, 16), label, 2), ctx)
    assert all(torch.isfinite(v) for v in result.losses.values())
    logs = result.logs
    assert logs["region_delta"] + logs["region_omega"] + logs["region_theta"] == pytest.approx(1.0)
