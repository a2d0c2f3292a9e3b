"""SASSNet: discriminator, adversarial losses, SDM regression and the method's step/after_step contract."""
from __future__ import annotations

import math

import pytest
import torch

from semisupseg.losses.adversarial import (discriminator_accuracy, discriminator_loss, eval_mode, frozen,
                                           generator_loss)
from semisupseg.losses.shape import sdm_mse_loss, sdm_targets
from semisupseg.methods import get_method
from semisupseg.methods.base import Batch, StepContext
from semisupseg.methods.sassnet import SASSNet, SASSNetParams
from semisupseg.nets import build_network
from semisupseg.nets.discriminators import MapImageDiscriminator
from semisupseg.runtime import bf16_supported


def _ctx(num_classes=2, seg_form="sigmoid", iteration=10, max_iterations=100, autocast=None):
    kw = {} if autocast is None else {"autocast": autocast}
    return StepContext(iteration=iteration, max_iterations=max_iterations, device=torch.device("cpu"),
                       num_classes=num_classes, seg_form=seg_form, generator=torch.Generator().manual_seed(0), **kw)


def _batch(num_classes=2, labeled=2, unlabeled=2, shape=(16, 16, 16)):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(labeled + unlabeled, 1, *shape, generator=g)
    label = torch.zeros(labeled, *shape, dtype=torch.long)
    label[:, 4:12, 5:12, 4:12] = 1
    if num_classes > 2:
        label[:, 6:10, 7:10, 6:10] = 2
    return Batch(image=image, label=label, labeled_bs=labeled)


def _setup(num_classes=2, seg_form="sigmoid", params=None):
    model = build_network("vnet", dict(num_classes=num_classes, seg_form=seg_form, sdm_head=True, n_filters=4))
    method = SASSNet(params or SASSNetParams(d_ndf=4))
    method.build(model, num_classes, 1)
    return model, method


# --- adversarial losses -------------------------------------------------------------------------------------------
def test_discriminator_and_generator_losses_hand_computed():
    assert discriminator_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(math.log(2), abs=1e-6)
    # (softplus(-2) + softplus(-1)) / 2: real judged real with logit 2, fake judged fake with logit -1
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert discriminator_loss(torch.tensor([2.0]), torch.tensor([-1.0])).item() == pytest.approx(expected, abs=1e-6)
    # generator wants the fakes judged real: mean softplus(-l) over [-1, 1]
    expected = (math.log1p(math.exp(1.0)) + math.log1p(math.exp(-1.0))) / 2
    assert generator_loss(torch.tensor([-1.0, 1.0])).item() == pytest.approx(expected, abs=1e-6)
    assert discriminator_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-2.0, -3.0])) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        generator_loss(torch.zeros(0))


def test_sdm_mse_hand_computed():
    p = torch.tensor([1.0, -1.0, 0.5, 0.0]).view(1, 1, 1, 1, 4)
    g = torch.tensor([1.0, 1.0, 0.5, 0.5]).view(1, 1, 1, 1, 4)
    assert sdm_mse_loss(p, g).item() == pytest.approx((0 + 4 + 0 + 0.25) / 4)


def test_sdm_targets_per_foreground_class():
    lab = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    lab[0, 2:6, 2:6, 2:6] = 1
    lab[1, 1:4, 1:4, 1:4] = 2
    sdm = sdm_targets(lab, 3)
    assert sdm.shape == (2, 2, 8, 8, 8) and sdm.dtype == torch.float32
    assert sdm.min() >= -1 and sdm.max() <= 1
    assert sdm[0, 0, 4, 4, 4] < 0 and sdm[0, 0, 0, 0, 0] > 0  # negative inside, positive outside
    assert sdm[1, 1, 2, 2, 2] < 0 and sdm[1, 1, 7, 7, 7] > 0
    assert (sdm[0, 1] > 0).all()  # class 2 absent from case 0: everything outside


# --- discriminator -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(17, 23, 31), (9, 40, 13), (16, 16, 16), (5, 7, 3), (33, 18, 20)])
def test_discriminator_accepts_any_patch_size(shape):
    disc = MapImageDiscriminator(map_channels=2, image_channels=1, ndf=4)
    maps = torch.randn(3, 2, *shape, requires_grad=True)
    logits = disc(maps, torch.randn(3, 1, *shape))
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()


def test_discriminator_rejects_mismatched_inputs():
    disc = MapImageDiscriminator(map_channels=1, image_channels=1, ndf=4)
    with pytest.raises(ValueError):
        disc(torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 17))


def test_discriminator_sees_the_image():
    """Same map, different images → different logits (the image branch is used)."""
    torch.manual_seed(0)
    disc = MapImageDiscriminator(map_channels=1, image_channels=1, ndf=4, dropout=0.0)
    m = torch.randn(1, 1, 16, 16, 16)
    assert not torch.allclose(disc(m, torch.randn(1, 1, 16, 16, 16)), disc(m, torch.randn(1, 1, 16, 16, 16)))


def test_frozen_and_eval_mode_restore_state():
    disc = MapImageDiscriminator(map_channels=1, image_channels=1, ndf=4)
    disc.train()
    with frozen(disc), eval_mode(disc):
        assert not any(p.requires_grad for p in disc.parameters()) and not disc.training
    assert all(p.requires_grad for p in disc.parameters()) and disc.training


# --- the method --------------------------------------------------------------------------------------------------
def test_registered_with_sdm_head_and_vnet():
    cls = get_method("sassnet")
    assert cls is SASSNet and cls.needs_sdm and cls.network_arch == "vnet"
    with pytest.raises(ValueError):
        SASSNet.make_params({"nope": 1})
    with pytest.raises(ValueError):
        SASSNetParams(beta_rampup="linear")


def test_beta_schedules():
    m = SASSNet(SASSNetParams(beta=0.001))
    assert m.adversarial_weight(_ctx(iteration=100, max_iterations=100)) == pytest.approx(0.001)
    assert m.adversarial_weight(_ctx(iteration=50, max_iterations=100)) == pytest.approx(0.001 * math.exp(-1.25))
    rel = SASSNet(SASSNetParams(beta=0.01, beta_rampup="sigmoid"))
    # release: 0.01 * sigmoid_rampup(it // 150, 40); full weight from iteration 6000
    assert rel.adversarial_weight(_ctx(iteration=6000, max_iterations=6000)) == pytest.approx(0.01)
    assert rel.adversarial_weight(_ctx(iteration=3000, max_iterations=6000)) == pytest.approx(
        0.01 * math.exp(-5 * (1 - 20 / 40) ** 2))


@pytest.mark.parametrize("num_classes,seg_form", [(2, "sigmoid"), (2, "softmax"), (3, "softmax")])
def test_step_returns_finite_weighted_terms(num_classes, seg_form):
    model, method = _setup(num_classes, seg_form)
    ctx = _ctx(num_classes, seg_form)
    result = method.step(model, _batch(num_classes), ctx)
    assert set(result.losses) == {"dice", "sdm", "adversarial"}
    for v in result.losses.values():
        assert v.dtype == torch.float32 and torch.isfinite(v)
    beta = method.adversarial_weight(ctx)
    assert result.losses["adversarial"].item() == pytest.approx(beta * result.logs["adv"], rel=1e-5)
    assert result.losses["sdm"].item() == pytest.approx(0.3 * result.logs["sdm_mse"], rel=1e-5)


def test_one_forward_per_step_and_none_in_after_step():
    model, method = _setup()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    batch, ctx = _batch(), _ctx()
    sum(method.step(model, batch, ctx).losses.values()).backward()
    method.after_step(model, batch, ctx)
    assert len(calls) == 1


def test_fresh_maps_give_the_discriminator_the_updated_segmenters_eval_mode_sdms(monkeypatch):
    """``d_fresh_maps``: the release's discriminator step, a second no-grad forward of the updated segmenter in eval
    mode (the model is back in train mode afterwards); the discriminator is updated on exactly those maps."""
    import semisupseg.methods.sassnet as sassnet_module

    model, method = _setup(params=SASSNetParams(d_ndf=4, d_fresh_maps=True))
    modes, seen = [], []
    model.register_forward_hook(lambda module, inputs, output: modes.append((module.training,
                                                                             torch.is_grad_enabled())))
    real_update = sassnet_module.update_discriminator
    monkeypatch.setattr(sassnet_module, "update_discriminator",
                        lambda m, maps, batch, ctx: (seen.append(maps), real_update(m, maps, batch, ctx))[1])
    batch, ctx = _batch(), _ctx()
    model.train()
    sum(method.step(model, batch, ctx).losses.values()).backward()
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.01)  # the segmenter's update: the fresh maps must be the updated model's
    logs = method.after_step(model, batch, ctx)
    assert modes == [(True, True), (False, False)] and model.training
    model.eval()
    with torch.no_grad():
        expected = model(batch.image)["sdm"].float()
    assert torch.allclose(seen[0], expected) and "d_loss" in logs


def test_gradients_reach_exactly_the_right_parameters():
    torch.manual_seed(0)
    model, method = _setup()
    disc, opt = method.discriminator, method.optimizers["discriminator"]
    batch, ctx = _batch(), _ctx()
    result = method.step(model, batch, ctx)
    # the generator term alone: reaches the SDM head, not the segmentation head, never the discriminator
    result.losses["adversarial"].backward(retain_graph=True)
    assert model.sdm_head.weight.grad is not None and model.sdm_head.weight.grad.abs().sum() > 0
    assert model.seg_head.weight.grad is None
    assert all(p.grad is None for p in disc.parameters())
    model.zero_grad(set_to_none=True)
    sum(result.losses.values()).backward()
    assert all(p.grad is None for p in disc.parameters())
    assert len(opt.state) == 0  # the generator step leaves the discriminator's optimiser untouched
    # the discriminator step updates D only
    before_model = [p.detach().clone() for p in model.parameters()]
    grads_model = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    before_disc = [p.detach().clone() for p in disc.parameters()]
    logs = method.after_step(model, batch, ctx)
    assert set(logs) == {"d_loss", "d_acc"} and math.isfinite(logs["d_loss"])
    assert all(torch.equal(a, p) for a, p in zip(before_model, model.parameters()))
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
               for g, p in zip(grads_model, model.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(before_disc, disc.parameters()))
    assert len(opt.state) > 0


def test_discriminator_learns_to_separate_labeled_from_unlabeled():
    """With maps that differ between the two streams, a few after_step updates lower the discriminator loss."""
    torch.manual_seed(0)
    model, method = _setup(params=SASSNetParams(d_ndf=4, d_lr=1e-2, d_dropout=0.0))
    batch, ctx = _batch(), _ctx()
    maps = torch.cat([torch.full((2, 1, 16, 16, 16), -0.5), torch.full((2, 1, 16, 16, 16), 0.5)])
    losses = []
    for _ in range(15):
        method._cache = maps
        losses.append(method.after_step(model, batch, ctx)["d_loss"])
    assert losses[-1] < 0.5 * losses[0]


def test_labeled_only_batch_has_no_adversarial_term():
    model, method = _setup()
    batch, ctx = _batch(labeled=2, unlabeled=0), _ctx()
    result = method.step(model, batch, ctx)
    assert set(result.losses) == {"dice", "sdm"}
    assert method.after_step(model, batch, ctx) == {}


def test_optimizer_state_round_trip():
    model, method = _setup()
    batch, ctx = _batch(), _ctx()
    sum(method.step(model, batch, ctx).losses.values()).backward()
    method.after_step(model, batch, ctx)
    state = method.optimizer_state()
    _, other = _setup()
    other.load_optimizer_state(state)
    assert len(other.optimizers["discriminator"].state) == len(method.optimizers["discriminator"].state)


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="no bf16 autocast on this CPU")
def test_step_under_bf16_autocast_gives_float32_losses():
    from semisupseg.runtime import autocast

    model, method = _setup()
    dev = torch.device("cpu")
    model = model.to(memory_format=torch.channels_last_3d)
    ctx = _ctx(autocast=lambda: autocast(dev))
    batch = _batch()
    with autocast(dev):
        result = method.step(model, batch, ctx)
    for v in result.losses.values():
        assert v.dtype == torch.float32 and torch.isfinite(v)
    sum(result.losses.values()).backward()
    assert math.isfinite(method.after_step(model, batch, ctx)["d_loss"])


def test_discriminator_follows_the_models_channels_last_format():
    from semisupseg.methods.sassnet import follow_memory_format

    model, method = _setup()
    disc = method.discriminator
    follow_memory_format(disc, model)
    assert disc.conv2.weight.is_contiguous()  # contiguous model: unchanged
    model.to(memory_format=torch.channels_last_3d)
    follow_memory_format(disc, model)
    assert disc.conv2.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not disc.conv2.weight.is_contiguous()
