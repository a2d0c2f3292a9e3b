"""Voxel-wise adversarial method: sampled fusion = dense fusion, loss terms by hand, gradients, updates, one step."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from semisupseg.methods import get_method
from semisupseg.methods.base import Batch, StepContext
from semisupseg.losses.adversarial import discriminator_loss, generator_loss
from semisupseg.methods.vwadv import VoxelAdversarial, VWAdvParams, byol_loss, sample_class_voxels
from semisupseg.nets import VNet
from semisupseg.nets.voxel_features import (MLPHead, MultiScaleVoxelFeatures, VoxelDiscriminator, sample_trilinear,
                                            vnet_stage_channels)


def test_sample_trilinear_equals_interpolate_then_index():
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 3, 5, 4)
    full = (7, 10, 9)  # non-integer ratios too
    dense = F.interpolate(feat, size=full, mode="trilinear", align_corners=False)
    idx = torch.stack([torch.randint(0, 2, (50,)), torch.randint(0, 7, (50,)), torch.randint(0, 10, (50,)),
                       torch.randint(0, 9, (50,))], dim=1)
    idx[0] = torch.tensor([1, 0, 0, 0])
    idx[1] = torch.tensor([0, 6, 9, 8])  # borders
    got = sample_trilinear(feat, idx, full)
    expected = dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]
    assert torch.allclose(got, expected, atol=1e-5)
    assert sample_trilinear(feat, torch.zeros((0, 4), dtype=torch.long), full).shape == (0, 3)


def test_fusion_sampled_equals_dense_and_gradients_flow():
    torch.manual_seed(1)
    net = VNet(n_filters=2)
    x = torch.randn(2, 1, 16, 32, 16)
    enc = net(x, features=True)["encoder"]
    stages = (2, 3, 4, 5)
    fusion = MultiScaleVoxelFeatures(vnet_stage_channels(2, stages), width=8)
    feats = [enc[s - 1] for s in stages]
    dense = fusion(feats, x.shape[2:])
    assert dense.shape == (2, 8, 16, 32, 16)
    idx = torch.nonzero(torch.rand(2, 16, 32, 16) > 0.995)
    sampled = fusion.sample(feats, idx, x.shape[2:])
    assert torch.allclose(sampled, dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]], atol=1e-5)
    sampled.sum().backward()
    assert net.block_five.conv[0].weight.grad is not None and fusion.fuse.weight.grad is not None
    with pytest.raises(ValueError):
        fusion.sample(feats[:2], idx, x.shape[2:])


def test_byol_loss_hand_value():
    p = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[0.0, 2.0], [0.6, 0.8]])
    # row 0: |(1,0) - (0,1)|² = 2 ; row 1: identical directions → 0
    assert byol_loss(p, z).item() == pytest.approx(1.0, abs=1e-6)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    cos = F.cosine_similarity(a, b, dim=1)
    assert byol_loss(a, b).item() == pytest.approx((2 - 2 * cos).mean().item(), rel=1e-5)


def test_discriminator_losses_hand_values():
    real = torch.tensor([0.0])
    fake = torch.tensor([math.log(3.0)])  # σ = 0.75
    # mean BCE over every sampled voxel: (-log 0.5 - log(1 - 0.75)) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    assert discriminator_loss(real, fake[:0]).item() == pytest.approx(math.log(2), rel=1e-6)
    assert generator_loss(fake).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_voxel_discriminator_class_heads():
    torch.manual_seed(0)
    disc = VoxelDiscriminator(8, 3, hidden=16)
    f = torch.randn(10, 8)
    cls = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    out = disc(f, cls)
    all_heads = disc.heads(disc.mlp(f))
    assert out.shape == (10,) and torch.allclose(out, all_heads[torch.arange(10), cls])
    head = MLPHead(8, 16, 4)
    assert head(f).shape == (10, 4) and head(f[:1]).shape == (1, 4)


def test_sample_class_voxels_balanced_valid_and_offset():
    labels = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    labels[1, 0, 0, 0] = 2
    valid = torch.ones_like(labels, dtype=torch.bool)
    valid[0, 0] = False
    g = torch.Generator().manual_seed(0)
    idx, cls = sample_class_voxels(labels, 3, 5, g, valid=valid, batch_offset=3)
    for c in range(3):
        sel = idx[cls == c]
        assert 0 < sel.shape[0] <= 5
        b = sel[:, 0] - 3
        assert bool((labels[b, sel[:, 1], sel[:, 2], sel[:, 3]] == c).all())
        assert bool(valid[b, sel[:, 1], sel[:, 2], sel[:, 3]].all())
    assert (cls == 2).sum() == 1  # the only voxel of class 2
    assert len(set(map(tuple, idx.tolist()))) == idx.shape[0]  # without replacement
    empty_idx, empty_cls = sample_class_voxels(labels, 3, 5, g, valid=torch.zeros_like(valid))
    assert empty_idx.shape == (0, 4) and empty_cls.shape == (0,)


def _setup(shape=(16, 16, 16), n_filters=2, seed=0, params=None):
    torch.manual_seed(seed)
    net = VNet(n_filters=n_filters)
    teacher = copy.deepcopy(net)
    for prm in teacher.parameters():
        prm.requires_grad_(False)
    method = VoxelAdversarial(params or VWAdvParams(samples_per_class=32, fusion_width=8, proj_hidden=8,
                                                    proj_dim=8, disc_hidden=8, confidence=0.5))
    method.build(net, 2, 1)
    image = torch.randn(4, 1, *shape)
    label = torch.zeros(2, *shape, dtype=torch.long)
    z, y, x = shape
    label[:, z // 4: 3 * z // 4, y // 4: 3 * y // 4, x // 4: 3 * x // 4] = 1
    ctx = StepContext(iteration=0, max_iterations=100, device=torch.device("cpu"), num_classes=2,
                      seg_form="softmax", generator=torch.Generator().manual_seed(seed), teacher=teacher)
    return net, teacher, method, Batch(image, label, 2), ctx


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_registered_and_defaults():
    assert get_method("vwadv") is VoxelAdversarial and VoxelAdversarial.uses_teacher
    p = VoxelAdversarial.make_params({"feature_stages": [1, 2, 3, 4]})
    assert p.feature_stages == (1, 2, 3, 4) and p.alpha == 0.01 and p.beta == 0.1 and p.confidence == 0.7
    assert p.disc_lr == 2e-4 and (p.disc_beta1, p.disc_beta2) == (0.5, 0.999) and p.proj_hidden == 64


@pytest.mark.parametrize("shape", [(16, 16, 16), (16, 32, 48)])
def test_step_any_patch_size_finite_terms_and_updates(shape):
    net, teacher, method, batch, ctx = _setup(shape=shape)
    ctx.iteration = 1  # EMA decay min(1 - 1/2, 0.99) = 0.5
    seg_opt = torch.optim.SGD(net.parameters(), lr=0.01)
    result = method.step(net, batch, ctx)
    assert set(result.losses) == {"dice", "adversarial", "feature", "consistency"}
    assert all(torch.isfinite(v) for v in result.losses.values())
    assert result.logs["samples_labeled"] == 64  # 32 per class, both classes present
    assert result.losses["adversarial"].item() == pytest.approx(0.01 * result.logs["loss_adv"], rel=1e-5)
    assert result.losses["feature"].item() == pytest.approx(0.1 * result.logs["loss_feature"], rel=1e-5)
    seg_opt.zero_grad()
    sum(result.losses.values()).backward()
    # the teacher and the EMA head never receive gradients
    assert all(prm.grad is None for prm in teacher.parameters())
    assert all(prm.grad is None for prm in method.teacher_fusion.parameters())
    assert all(prm.grad is None for prm in method.teacher_projector.parameters())
    assert all(prm.grad is not None for prm in net.parameters())
    assert method.fusion.fuse.weight.grad is not None and method.predictor.net[0].weight.grad is not None
    seg_opt.step()

    model_before, disc_before = _params(net), _params(method.discriminator)
    heads_before, teacher_head_before = _params(method.fusion), _params(method.teacher_fusion)
    logs = method.after_step(net, batch, ctx)
    assert math.isfinite(logs["loss_d"])
    # the discriminator/heads update does not change the segmenter
    assert all(torch.equal(v, _params(net)[k]) for k, v in model_before.items())
    assert any(not torch.equal(v, _params(method.discriminator)[k]) for k, v in disc_before.items())
    assert any(not torch.equal(v, _params(method.fusion)[k]) for k, v in heads_before.items())
    # EMA of the teacher head at t = 1: decay 0.5
    after = _params(method.fusion)
    for k, v in _params(method.teacher_fusion).items():
        assert torch.allclose(v, 0.5 * teacher_head_before[k] + 0.5 * after[k], atol=1e-6)


def test_discriminator_trained_only_by_its_own_loss():
    net, _, method, batch, ctx = _setup()
    result = method.step(net, batch, ctx)
    sum(result.losses.values()).backward()
    assert all(prm.grad is None for prm in method.discriminator.parameters())  # L_adv went through a frozen D
    f_l, cls_l, f_u, cls_u = method._pending
    ref = copy.deepcopy(method.discriminator)
    discriminator_loss(ref(f_l, cls_l), ref(f_u, cls_u)).backward()
    for group in method.optimizers["discriminator"].param_groups:
        group["lr"] = 0.0  # keep the parameters, inspect the gradients
    method.after_step(net, batch, ctx)
    for a, b in zip(method.discriminator.parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_adversarial_term_reaches_only_unlabeled_inputs():
    """Without BN (no batch coupling) the adversarial term depends on the unlabeled patches only."""
    torch.manual_seed(0)
    net = VNet(n_filters=2, normalization="none")
    _, teacher, method, batch, ctx = _setup()
    ctx.teacher = copy.deepcopy(net)
    method = VoxelAdversarial(VWAdvParams(samples_per_class=32, fusion_width=8, proj_hidden=8, proj_dim=8,
                                          disc_hidden=8, confidence=0.0))
    method.build(net, 2, 1)
    image = batch.image.clone().requires_grad_(True)
    result = method.step(net, Batch(image, batch.label, 2), ctx)
    (grad,) = torch.autograd.grad(result.losses["adversarial"], [image])
    assert grad[:2].abs().sum() == 0 and grad[2:].abs().sum() > 0


def test_bf16_autocast_step_is_finite():
    net, _, method, batch, ctx = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = method.step(net, batch, ctx)
    assert all(torch.isfinite(v.float()) for v in result.losses.values())


@pytest.mark.slow
def test_vwadv_trains_end_to_end_on_la(la_dir, tmp_path):
    import numpy as np
    from test_sgrs import _train_tiny

    steps = _train_tiny("vwadv", la_dir, tmp_path)
    assert len(steps) == 5
    for e in steps:
        assert all(math.isfinite(v) for v in e["losses"].values())
        assert math.isfinite(e["logs"]["loss_d"])
    dice = [e["losses"]["dice"] for e in steps]
    assert np.mean(dice[-2:]) < np.mean(dice[:2])


def test_three_classes_step():
    torch.manual_seed(0)
    net = VNet(n_filters=2, num_classes=3)
    teacher = copy.deepcopy(net)
    method = VoxelAdversarial(VWAdvParams(samples_per_class=16, fusion_width=8, proj_hidden=8, proj_dim=8,
                                          disc_hidden=8, confidence=0.0))
    method.build(net, 3, 1)
    label = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    label[:, 2:8] = 1
    label[:, 8:12] = 2
    ctx = StepContext(0, 10, torch.device("cpu"), 3, "softmax", torch.Generator().manual_seed(0), teacher=teacher)
    result = method.step(net, Batch(torch.randn(4, 1, 16, 16, 16), label, 2), ctx)
    assert result.logs["samples_labeled"] == 48 and method.discriminator.heads.out_features == 3
    sum(result.losses.values()).backward()
    assert math.isfinite(method.after_step(net, Batch(torch.randn(4, 1, 16, 16, 16), label, 2), ctx)["loss_d"])


def test_method_state_round_trip_resumes_identically():
    """Everything the method learns (heads, EMA head, discriminator, their optimisers) is in its saved state."""
    net, teacher, method, batch, ctx = _setup()
    seg_opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def one(m, model, opt, it):
        ctx.iteration = it
        result = m.step(model, batch, ctx)
        opt.zero_grad()
        sum(result.losses.values()).backward()
        opt.step()
        m.after_step(model, batch, ctx)
        return result

    one(method, net, seg_opt, 0)
    state, opt_state = copy.deepcopy(method.state_dict()), copy.deepcopy(method.optimizer_state())
    net_copy, seg_copy = copy.deepcopy(net), copy.deepcopy(seg_opt.state_dict())
    gen_state = ctx.generator.get_state()
    a = one(method, net, seg_opt, 1)

    resumed = VoxelAdversarial(method.params)
    resumed.build(net_copy, 2, 1)
    resumed.load_state_dict(state)
    resumed.load_optimizer_state(opt_state)
    opt2 = torch.optim.SGD(net_copy.parameters(), lr=0.01)
    opt2.load_state_dict(seg_copy)
    ctx.generator.set_state(gen_state)
    torch.manual_seed(0)
    b = one(resumed, net_copy, opt2, 1)
    for k in a.losses:
        assert a.losses[k].item() == pytest.approx(b.losses[k].item(), rel=1e-5, abs=1e-7)
    for (k, v), (_, w) in zip(method.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(v.float(), w.float(), atol=1e-6), k
