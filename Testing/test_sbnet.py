"""SB-Net: the multi-branch network, every loss term against hand-computed values, and the method's step."""
from __future__ import annotations

import math

import pytest
import torch

from semisupseg.losses.shape import (boundary_gradient_hinge_loss, boundary_loss, boundary_masks, class_dice_loss,
                                     gradient_magnitude, multiscale_psm_dice_loss, product_loss,
                                     psm_consistency_loss, sdm_l1_product_loss, sdm_psm_consistency_loss)
from semisupseg.methods import get_method
from semisupseg.methods.base import Batch, StepContext
from semisupseg.methods.sbnet import SBNetMethod, SBNetParams, hybrid_loss_terms
from semisupseg.nets import build_network, network_arch
from semisupseg.nets.sbnet import SBNet, SBNetConfig, multilabel_to_seg_logits


def _line(values, reps=(2, 2)):
    """A ``(1, 1, Z, Y, X)`` tensor constant along z and y with ``values`` along x."""
    t = torch.tensor(values, dtype=torch.float32)
    return t.view(1, 1, 1, 1, -1).expand(1, 1, reps[0], reps[1], len(values)).contiguous()


# --- losses, hand-computed -----------------------------------------------------------------------------------------
def test_product_and_sdm_loss_hand_computed():
    p = torch.tensor([1.0, -1.0, 0.5, 0.0]).view(1, 1, 1, 1, 4)
    g = torch.tensor([1.0, 1.0, 0.5, 0.5]).view(1, 1, 1, 1, 4)
    # Σpg = 0.25, Σp² = 2.25, Σg² = 2.5  →  -0.25 / 5
    assert product_loss(p, g).item() == pytest.approx(-0.05, abs=1e-6)
    assert product_loss(g, g).item() == pytest.approx(-1 / 3, abs=1e-6)
    # eq. 3: mean |p - g| = (0 + 2 + 0 + 0.5) / 4 = 0.625
    assert sdm_l1_product_loss(p, g).item() == pytest.approx(0.625 - 0.05, abs=1e-6)


def test_product_loss_is_a_mean_over_class_channels():
    p = torch.tensor([[1.0, 1.0], [1.0, -1.0]]).view(1, 2, 1, 1, 2)
    g = torch.ones(1, 2, 1, 1, 2)
    # channel 0: -2 / 6 ; channel 1: 0 / (0 + 2 + 2) = 0
    assert product_loss(p, g).item() == pytest.approx((-1 / 3 + 0.0) / 2, abs=1e-6)


def test_psm_dice_hand_computed():
    p = torch.tensor([0.5, 1.0, 0.0, 0.25]).view(1, 1, 1, 1, 4)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 1, 4)
    # 1 - 2·1.5 / (1.3125 + 2)
    expected = 1 - (3 + 1e-5) / (3.3125 + 1e-5)
    assert class_dice_loss(p, y).item() == pytest.approx(expected, abs=1e-6)
    assert multiscale_psm_dice_loss([p, y, p], y).item() == pytest.approx(2 * expected, abs=1e-6)  # eq. 6-7


def test_gradient_magnitude_central_differences():
    g = gradient_magnitude(_line([0, 0, 0.4, 0.6, 1, 1]))
    assert torch.allclose(g[0, 0, 0, 0], torch.tensor([0.0, 0.2, 0.3, 0.3, 0.2, 0.0]), atol=1e-5)
    assert torch.isfinite(gradient_magnitude(torch.zeros(1, 1, 1, 1, 3))).all()  # sides of one voxel


def test_boundary_gradient_hinge_hand_computed():
    y = _line([0, 0, 0, 1, 1, 1])  # reference edge |∇Y| = 0.5 at x = 2, 3
    p = _line([0, 0, 0.4, 0.6, 1, 1])  # |∇P| = 0.3 there
    ring = torch.ones_like(y, dtype=torch.bool)
    assert boundary_gradient_hinge_loss(p, y, ring, contrast=1.0).item() == pytest.approx(0.2, abs=1e-5)
    assert boundary_gradient_hinge_loss(p, y, ring, contrast=0.8).item() == pytest.approx(0.1, abs=1e-5)
    assert boundary_gradient_hinge_loss(p, y, ring, contrast=0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert boundary_gradient_hinge_loss(y, y, ring, contrast=1.0).item() == pytest.approx(0.0, abs=1e-5)
    # a flat prediction pays κ·0.5 at every reference edge voxel
    assert boundary_gradient_hinge_loss(torch.full_like(y, 0.5), y, ring, 0.5).item() == pytest.approx(0.25, abs=1e-5)
    # only ring voxels count
    ring_part = ring.clone()
    ring_part[..., 3:] = False
    flat = _line([0, 0, 0.5, 0.5, 0.5, 1])  # |∇P| = 0.25 at x=2 and 0 at x=3
    assert boundary_gradient_hinge_loss(flat, y, ring_part, 1.0).item() == pytest.approx(0.25, abs=1e-5)
    assert boundary_gradient_hinge_loss(flat, y, ring, 1.0).item() == pytest.approx((0.25 + 0.5) / 2, abs=1e-5)


def test_boundary_loss_is_ring_dice_plus_hinge():
    y = _line([0, 0, 0, 1, 1, 1])
    p = _line([0.1, 0, 0.4, 0.6, 1, 0.2])
    ring = torch.zeros_like(y, dtype=torch.bool)
    ring[..., 1:5] = True  # the outer values 0.1 and 0.2 are outside the ring
    # in the ring (per line): p = [0, .4, .6, 1], y = [0, 0, 1, 1] → 2Σpy = 3.2, Σp² = 1.52, Σy² = 2
    dice = 1 - (4 * 3.2 / 1 + 1e-5) / (4 * 3.52 + 1e-5)  # 4 lines (z, y) all alike
    expected = dice + 0.2  # hinge with κ = 1
    assert boundary_loss(p, y, ring, contrast=1.0).item() == pytest.approx(expected, abs=1e-5)


def test_boundary_masks_per_class():
    lab = torch.zeros(2, 12, 12, 12, dtype=torch.long)
    lab[0, 3:9, 3:9, 3:9] = 1
    lab[1, 2:6, 2:6, 2:6] = 2
    ring = boundary_masks(lab, 3, w_max=20)
    assert ring.shape == (2, 2, 12, 12, 12) and ring.dtype == torch.bool
    assert not ring[0, 1].any() and not ring[1, 0].any()  # absent classes: empty rings
    assert ring[0, 0, 3, 3, 3] and ring[0, 0, 2, 5, 5]  # inner and outer band around the cube's surface
    assert not ring[0, 0, 0, 0, 0]


def test_consistency_terms_hand_computed():
    p5 = torch.tensor([0.2, 0.8]).view(1, 1, 1, 1, 2)
    p4 = torch.tensor([0.0, 0.4]).view(1, 1, 1, 1, 2)
    assert psm_consistency_loss(p5, p4).item() == pytest.approx((0.04 + 0.16) / 2, abs=1e-6)  # eq. 13
    sdm = torch.tensor([0.0, -0.001]).view(1, 1, 1, 1, 2)
    q = torch.tensor([0.0, 1.0]).view(1, 1, 1, 1, 2)
    h = 1 / (1 + math.exp(-1.5))  # sigmoid(-1500 · -0.001)
    expected = (0.5 ** 2 + (1 - h) ** 2) / 2
    assert sdm_psm_consistency_loss(sdm, q).item() == pytest.approx(expected, abs=1e-6)  # eq. 14


def test_hybrid_weights():
    one = torch.tensor(1.0)
    terms = hybrid_loss_terms(0.25, one, one, one, one, one)
    expected = {"psm": 0.75, "sdm": 0.75 * 0.02, "boundary": 0.75 * 0.5, "consistency": 0.25, "adversarial": 0.25}
    assert {k: pytest.approx(v) for k, v in expected.items()} == {k: v.item() for k, v in terms.items()}
    assert set(hybrid_loss_terms(0.5, None, None, None, one, one)) == {"consistency", "adversarial"}


def test_default_keeps_supervision_to_the_end_paper_gamma_by_flag():
    """γ_max = 1 (the paper) drops the supervised weight to 0 at t_max -- the collapse seen on LA; the default 0.5
    keeps half of it, and the paper's value stays one parameter away."""
    _, method = _setup()
    end = _ctx(2, "sigmoid", iteration=100, max_iterations=100)
    one = torch.tensor(1.0)
    terms = hybrid_loss_terms(method.gamma(end), one, one, one, one, one)
    assert terms["psm"].item() == pytest.approx(0.5) and terms["adversarial"].item() == pytest.approx(0.5)
    paper = get_method("sbnet")(SBNetParams(gamma_max=1.0, d_ndf=4))
    assert paper.gamma(end) == pytest.approx(1.0)
    assert hybrid_loss_terms(paper.gamma(end), one, one, one, one, one)["psm"].item() == pytest.approx(0.0)


# --- the network -------------------------------------------------------------------------------------------------
def test_multilabel_probabilities():
    z = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1, 1)  # p = 0.5, 0.75
    prob = torch.softmax(multilabel_to_seg_logits(z, "softmax"), dim=1).flatten()
    q = torch.tensor([0.5 * 0.25, 0.5, 0.75])
    assert torch.allclose(prob, q / q.sum(), atol=1e-6)
    z1 = torch.tensor([0.7]).view(1, 1, 1, 1, 1)
    binary = torch.softmax(multilabel_to_seg_logits(z1, "softmax"), dim=1).flatten()
    assert torch.allclose(binary, torch.tensor([1 - torch.sigmoid(z1).item(), torch.sigmoid(z1).item()]))


@pytest.mark.parametrize("num_classes,seg_form", [(2, "sigmoid"), (2, "softmax"), (3, "softmax")])
def test_network_outputs_and_config_round_trip(num_classes, seg_form):
    torch.manual_seed(0)
    net = SBNet(SBNetConfig(num_classes=num_classes, seg_form=seg_form, n_filters=2)).eval()
    x = torch.randn(2, 1, 16, 32, 16)
    out = net(x, features=True)
    k = num_classes - 1
    assert out["seg"].shape == (2, net.config.seg_channels, 16, 32, 16)
    assert out["sdm"].shape == out["psm5"].shape == (2, k, 16, 32, 16)
    assert len(out["psm"]) == 4 and all(f.shape == (2, k, 16, 32, 16) for f in out["psm"])
    assert out["sdm"].abs().max() <= 1 and len(out["decoder"]) == 4
    prob = net.probabilities(out["seg"])
    assert prob.shape == (2, num_classes, 16, 32, 16)
    assert torch.allclose(prob.sum(1), torch.ones(2, 16, 32, 16), atol=1e-5)
    # the final output is PSM5: its foreground probabilities follow sigmoid(psm5) (binary: exactly)
    if num_classes == 2:
        assert torch.allclose(prob[:, 1:], torch.sigmoid(out["psm5"]), atol=1e-5)
    assert network_arch(net) == "sbnet"
    rebuilt = build_network("sbnet", net.config.to_dict())
    rebuilt.load_state_dict(net.state_dict())
    assert torch.allclose(rebuilt.eval()(x)["seg"], out["seg"])


def test_network_config_validation():
    with pytest.raises(ValueError):
        SBNetConfig(num_classes=3, seg_form="sigmoid")
    with pytest.raises(ValueError):
        SBNetConfig(sdm_head=False)
    with pytest.raises(TypeError):
        build_network("sbnet", {"num_classes": 2, "bogus": 1})


# --- the method --------------------------------------------------------------------------------------------------
def _ctx(num_classes, seg_form, iteration=30, max_iterations=100):
    return StepContext(iteration=iteration, max_iterations=max_iterations, device=torch.device("cpu"),
                       num_classes=num_classes, seg_form=seg_form, generator=torch.Generator().manual_seed(0))


def _batch(num_classes, labeled=2, unlabeled=2, shape=(16, 16, 16)):
    g = torch.Generator().manual_seed(3)
    label = torch.zeros(labeled, *shape, dtype=torch.long)
    label[:, 4:12, 5:12, 4:12] = 1
    if num_classes > 2:
        label[:, 6:10, 7:10, 6:10] = 2
    return Batch(torch.randn(labeled + unlabeled, 1, *shape, generator=g), label, labeled)


def _setup(num_classes=2, seg_form="sigmoid"):
    torch.manual_seed(0)
    net = build_network("sbnet", dict(num_classes=num_classes, seg_form=seg_form, n_filters=2))
    method = get_method("sbnet")(SBNetParams(d_ndf=4))
    method.build(net, num_classes, 1)
    return net, method


def test_registered():
    cls = get_method("sbnet")
    assert cls is SBNetMethod and cls.network_arch == "sbnet" and cls.needs_sdm


@pytest.mark.parametrize("num_classes,seg_form", [(2, "sigmoid"), (3, "softmax")])
def test_step_finite_terms_and_gamma(num_classes, seg_form):
    net, method = _setup(num_classes, seg_form)
    ctx = _ctx(num_classes, seg_form)
    result = method.step(net, _batch(num_classes), ctx)
    assert set(result.losses) == {"psm", "sdm", "boundary", "consistency", "adversarial"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in result.losses.values())
    gamma = 0.5 * math.exp(-5 * (1 - 0.3) ** 2)  # default γ_max 0.5
    assert result.logs["gamma"] == pytest.approx(gamma)
    assert result.losses["psm"].item() == pytest.approx((1 - gamma) * result.logs["l_psm"], rel=1e-5)
    assert result.losses["adversarial"].item() == pytest.approx(gamma * result.logs["l_adv"], rel=1e-5)
    assert 0 < result.logs["l_psm"] <= 5  # five Dice losses


def test_gradients_reach_every_network_parameter_and_never_the_discriminator():
    net, method = _setup()
    disc, opt = method.discriminator, method.optimizers["discriminator"]
    batch, ctx = _batch(2), _ctx(2, "sigmoid")
    result = method.step(net, batch, ctx)
    sum(result.losses.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []  # no unused parameters (DDP-safe), every branch is trained
    assert all(p.grad is None for p in disc.parameters()) and len(opt.state) == 0
    before = [p.detach().clone() for p in net.parameters()]
    logs = method.after_step(net, batch, ctx)
    assert math.isfinite(logs["d_loss"]) and len(opt.state) > 0
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_labeled_only_and_unlabeled_only_batches():
    net, method = _setup()
    ctx = _ctx(2, "sigmoid")
    labeled_only = method.step(net, _batch(2, labeled=2, unlabeled=0), ctx)
    assert "adversarial" not in labeled_only.losses and "psm" in labeled_only.losses
    unlabeled_only = method.step(net, _batch(2, labeled=0, unlabeled=2), ctx)
    assert set(unlabeled_only.losses) == {"consistency", "adversarial"}


def test_model_file_round_trip_and_sliding_window_inference(tmp_path):
    """An SB-Net model file rebuilds through the network registry; inference gives C-channel probabilities."""
    from semisupseg.checkpoint import load_model, make_card, save_model
    from semisupseg.inference import sliding_window_inference

    torch.manual_seed(0)
    net = SBNet(SBNetConfig(num_classes=3, seg_form="softmax", n_filters=2)).eval()
    card = make_card(net, method="sbnet", spacing_xyz=(1, 1, 1), patch_size_xyz=(16, 16, 16))
    save_model(tmp_path / "m.pt", net, card)
    loaded, loaded_card = load_model(tmp_path / "m.pt")
    assert type(loaded) is SBNet and loaded_card.arch == "sbnet"
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.allclose(loaded(x)["seg"], net(x)["seg"], atol=1e-6)
    out = sliding_window_inference(loaded, torch.randn(1, 20, 18, 17), (16, 16, 16), overlap=0.5)
    assert out["prob"].shape == (3, 20, 18, 17) and out["sdm"].shape == (2, 20, 18, 17)
    assert abs(float(out["prob"].sum(0).mean()) - 1.0) < 1e-4


def test_width_cap_reaches_the_backbone_and_the_branch_heads():
    capped = SBNet(SBNetConfig(num_classes=3, n_filters=4, max_filters=8))
    assert capped.backbone.config.widths == (4, 8, 8, 8, 8)
    assert [h.in_channels for h in capped.psm_heads] == [8, 8, 4]
    plain = SBNet(SBNetConfig(num_classes=3, n_filters=4))
    assert [h.in_channels for h in plain.psm_heads] == [16, 8, 4]
    assert sum(p.numel() for p in capped.parameters()) < sum(p.numel() for p in plain.parameters())
    out = capped.eval()(torch.randn(1, 1, 16, 16, 16))
    assert out["seg"].shape[1] == 3 and out["sdm"].shape[1] == 2
    rebuilt = build_network("sbnet", capped.config.to_dict())
    rebuilt.load_state_dict(capped.state_dict())  # the cap is part of the stored architecture


def test_residual_stages_and_encoder_depths_reach_the_backbone():
    net = SBNet(SBNetConfig(num_classes=3, n_filters=4, max_filters=8, residual=True, encoder_depths=(2, 2, 3, 3, 3)))
    assert net.backbone.config.residual and net.backbone.config.depths == (2, 2, 3, 3, 3)
    assert net.backbone.block_two.residual and "backbone.block_one.conv.3.weight" in net.state_dict()
    rebuilt = build_network("sbnet", net.config.to_dict())
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.backbone.block_two.residual
