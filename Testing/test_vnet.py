"""V-Net: peer-release reproduction, norms/dropout/heads/features, and the peer key layouts (MC-Net/SGRS-Net split)."""
from __future__ import annotations

import pytest
import torch

from semisupseg.nets import VNet, VNetConfig, build_network, seg_probabilities, softmax_logits
from semisupseg.nets.vnet import (LayoutError, group_norm_groups, infer_vnet_config, map_state_dict, to_layout)

NORMS = ("batchnorm", "groupnorm", "instancenorm", "none")


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: one intra-op thread is fastest and immune to spin-waiting on a loaded 2-core machine
    (measured: 0.03 s vs 0.1–3 s per forward with 2 threads while other jobs run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load_fixture(peer_fixtures, name):
    sd = torch.load(peer_fixtures / f"{name}.state_dict.pt", map_location="cpu", weights_only=True)
    io = torch.load(peer_fixtures / f"{name}.io.pt", map_location="cpu", weights_only=True)
    return sd, io


# ---------------------------------------------------------------------------------------------------------------------
# Reproducing the public releases' outputs (state_dicts load with no renaming)
# ---------------------------------------------------------------------------------------------------------------------

def test_sassnet_dtc_vnet_sdf_reproduced(peer_fixtures):
    sd, io = _load_fixture(peer_fixtures, "sassnet_dtc_vnet_sdf")
    # VNet(n_channels=1, n_classes=1, n_filters=4, batchnorm) of vnet_sdf.py: 1 seg channel = our sigmoid form
    net = VNet(VNetConfig(in_channels=1, num_classes=2, seg_form="sigmoid", sdm_head=True, n_filters=4))
    net.load_state_dict(sd, strict=True)
    net.eval()
    with torch.no_grad():
        out = net(io["input"])
    assert out["sdm"].shape == io["output0"].shape == (2, 1, 32, 32, 16)
    # release forward returns (tanh(out_conv(x9)), out_conv2(x9)): SDM first, segmentation second
    torch.testing.assert_close(out["sdm"], io["output0"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["seg"], io["output1"], atol=1e-5, rtol=0)
    assert not torch.allclose(io["output0"], io["output1"])  # the two heads really differ
    assert out["sdm"].abs().max() <= 1


def test_uamt_vnet_reproduced(peer_fixtures):
    sd, io = _load_fixture(peer_fixtures, "uamt_vnet")
    net = VNet(VNetConfig(in_channels=1, num_classes=2, n_filters=4))
    net.load_state_dict(sd, strict=True)
    net.eval()
    with torch.no_grad():
        out = net(io["input"])
    assert set(out) == {"seg"}
    torch.testing.assert_close(out["seg"], io["output0"], atol=1e-5, rtol=0)
    # batch-norm running statistics matter: train-mode output differs
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(io["input"])["seg"], io["output0"], atol=1e-3)


@pytest.mark.parametrize("name,layout", [("sassnet_dtc_vnet_sdf", "sassnet"), ("uamt_vnet", "uamt")])
def test_peer_config_inferred_and_identity_mapping(peer_fixtures, name, layout):
    sd, io = _load_fixture(peer_fixtures, name)
    mapped, dropped = map_state_dict(sd, layout)
    assert dropped == [] and set(mapped) == set(sd)
    cfg = infer_vnet_config(mapped)
    assert (cfg.n_filters, cfg.in_channels, cfg.normalization, cfg.num_classes) == (4, 1, "batchnorm", 2)
    assert cfg.sdm_head == (layout == "sassnet")
    assert cfg.seg_form == ("sigmoid" if layout == "sassnet" else "softmax")


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dropout", [False, True])
def test_every_norm_and_dropout_builds_runs_and_trains(norm, dropout):
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=4, normalization=norm, dropout=dropout, num_classes=3, sdm_head=True))
    x = torch.randn(2, 1, 32, 32, 32)  # instance norm needs > 1 voxel at the 1/16 bottleneck
    net.train()
    out = net(x)
    assert out["seg"].shape == (2, 3, 32, 32, 32) and out["sdm"].shape == (2, 2, 32, 32, 32)
    (out["seg"].mean() + out["sdm"].mean()).backward()
    assert net.block_one.conv[0].weight.grad is not None and net.block_one.conv[0].weight.grad.abs().sum() > 0
    kinds = {type(m).__name__ for m in net.modules()}
    expected = {"batchnorm": "BatchNorm3d", "groupnorm": "GroupNorm", "instancenorm": "InstanceNorm3d"}.get(norm)
    if expected:
        assert expected in kinds
    else:
        assert not kinds & {"BatchNorm3d", "GroupNorm", "InstanceNorm3d"}
    assert infer_vnet_config(net.state_dict()).normalization == norm


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=4, normalization="none", dropout=True, dropout_p=0.5))
    x = torch.randn(1, 1, 16, 16, 16)
    net.train()
    a, b = net(x)["seg"], net(x)["seg"]
    assert not torch.allclose(a, b)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x)["seg"], net(x)["seg"])
    plain = VNet(VNetConfig(n_filters=4, normalization="none", dropout=False))
    plain.train()
    torch.testing.assert_close(plain(x)["seg"], plain(x)["seg"])


def test_group_norm_groups_match_releases_when_possible():
    assert group_norm_groups(16) == 16 and group_norm_groups(256) == 16
    assert group_norm_groups(8) == 8 and group_norm_groups(4) == 4 and group_norm_groups(12) == 4
    net = VNet(VNetConfig(n_filters=16, normalization="groupnorm"))
    assert all(m.num_groups == 16 for m in net.modules() if isinstance(m, torch.nn.GroupNorm))


def test_feature_shapes():
    n = 2
    net = VNet(VNetConfig(n_filters=n, in_channels=2))
    out = net(torch.randn(1, 2, 32, 32, 16), features=True)
    enc = [tuple(t.shape) for t in out["encoder"]]
    dec = [tuple(t.shape) for t in out["decoder"]]
    assert enc == [(1, n, 32, 32, 16), (1, 2 * n, 16, 16, 8), (1, 4 * n, 8, 8, 4), (1, 8 * n, 4, 4, 2),
                   (1, 16 * n, 2, 2, 1)]
    assert dec == [(1, 8 * n, 4, 4, 2), (1, 4 * n, 8, 8, 4), (1, 2 * n, 16, 16, 8), (1, n, 32, 32, 16)]
    # the heads read the last decoder feature
    torch.testing.assert_close(out["seg"], net.seg_head(out["decoder"][-1]))
    assert "encoder" not in net(torch.randn(1, 2, 32, 32, 16))


def test_inference_skip_add_in_place_changes_nothing():
    """Without autograd the decoder adds its skips in place (into the upsampled map): outputs equal the graph-mode
    forward's, and the returned encoder features (the skips) are left untouched."""
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=2, sdm_head=True)).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    graph = net(x, features=True)
    with torch.inference_mode():
        fast = net(x, features=True)
        encoder_again = net.encode(x)
    for key in ("seg", "sdm"):
        torch.testing.assert_close(fast[key], graph[key].detach(), rtol=0, atol=1e-6)
    for a, b in zip(fast["encoder"], encoder_again):
        assert torch.equal(a, b)


def test_head_forms_and_probability_equivalence():
    torch.manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16)
    sig = VNet(VNetConfig(n_filters=2, seg_form="sigmoid", sdm_head=True)).eval()
    soft = VNet(VNetConfig(n_filters=2, num_classes=4, sdm_head=True)).eval()
    with torch.no_grad():
        o_sig, o_soft = sig(x), soft(x)
    assert o_sig["seg"].shape[1] == 1 and o_sig["sdm"].shape[1] == 1
    assert o_soft["seg"].shape[1] == 4 and o_soft["sdm"].shape[1] == 3
    for net, out in ((sig, o_sig), (soft, o_soft)):
        form = net.config.seg_form
        p = net.probabilities(out["seg"])
        assert p.shape[1] == net.config.num_classes
        torch.testing.assert_close(p.sum(1), torch.ones_like(p[:, 0]))
        torch.testing.assert_close(seg_probabilities(out["seg"], form), torch.softmax(softmax_logits(out["seg"], form), 1))
        assert out["sdm"].abs().max() <= 1
    z = o_sig["seg"]
    torch.testing.assert_close(sig.probabilities(z)[:, 1:], torch.sigmoid(z))
    torch.testing.assert_close(softmax_logits(o_soft["seg"], "softmax"), o_soft["seg"])
    # head identities of the release layout
    assert sig.seg_head is sig.out_conv2 and sig.sdm_head is sig.out_conv
    plain = VNet(VNetConfig(n_filters=2))
    assert plain.seg_head is plain.out_conv and plain.sdm_head is None and not hasattr(plain, "out_conv2")


@pytest.mark.parametrize("kwargs", [dict(seg_form="sigmoid", num_classes=3), dict(normalization="layernorm"),
                                    dict(num_classes=1), dict(seg_form="softplus")])
def test_invalid_configs_rejected(kwargs):
    with pytest.raises(ValueError):
        VNetConfig(**kwargs)


def test_build_network_from_config_dict():
    cfg = VNetConfig(n_filters=2, num_classes=3, sdm_head=True, normalization="instancenorm")
    net = build_network("vnet", cfg.to_dict())
    assert isinstance(net, VNet) and net.config == cfg


# ---------------------------------------------------------------------------------------------------------------------
# Peer key layouts
# ---------------------------------------------------------------------------------------------------------------------

#: key names of the MC-Net release (MC-Net code/networks/VNet.py: MCNet3d_v1 = encoder + decoder1 (ConvTranspose3d
#: upsampling, mode_interpolation=0) + decoder2 (trilinear Upsample + Conv3d)) and SGRS-Net (VNet = encoder +
#: decoder1), written out by hand, with the key of our V-Net each must map to
REAL_MCNET_KEYS = {
    "encoder.block_one.conv.0.weight": "block_one.conv.0.weight",
    "encoder.block_one.conv.1.running_mean": "block_one.conv.1.running_mean",
    "encoder.block_one_dw.conv.0.weight": "block_one_dw.conv.0.weight",
    "encoder.block_five.conv.6.bias": "block_five.conv.6.bias",
    "encoder.block_four_dw.conv.1.num_batches_tracked": "block_four_dw.conv.1.num_batches_tracked",
    "decoder1.block_five_up.conv.0.weight": "block_five_up.conv.0.weight",
    "decoder1.block_six.conv.3.weight": "block_six.conv.3.weight",
    "decoder1.block_eight_up.conv.1.running_var": "block_eight_up.conv.1.running_var",
    "decoder1.block_nine.conv.0.weight": "block_nine.conv.0.weight",
    "decoder1.out_conv.weight": "out_conv.weight",
    "decoder1.out_conv.bias": "out_conv.bias",
}
#: MC-Net decoder2 keys (interpolation + 3x3x3 conv: a different upsampling, dropped on import)
REAL_MCNET_DECODER2_KEYS = ("decoder2.block_five_up.conv.1.weight", "decoder2.block_five_up.conv.2.running_mean",
                            "decoder2.out_conv.weight")


def _mcnet_v1_state_dict(net: VNet) -> dict:
    """An MCNet3d_v1-shaped state_dict built from our model: encoder + decoder1 + an interpolating decoder2."""
    sd = to_layout(net.state_dict(), "mcnet", decoder="decoder1")
    n = net.config.n_filters
    sd["decoder2.block_five_up.conv.1.weight"] = torch.randn(8 * n, 16 * n, 3, 3, 3)
    sd["decoder2.block_five_up.conv.1.bias"] = torch.randn(8 * n)
    sd["decoder2.block_five_up.conv.2.running_mean"] = torch.randn(8 * n)
    sd["decoder2.out_conv.weight"] = torch.randn(net.config.num_classes, n, 1, 1, 1)
    return sd


def test_mcnet_layout_uses_the_release_key_names():
    net = VNet(VNetConfig(n_filters=2))
    sd = _mcnet_v1_state_dict(net)
    ours = net.state_dict()
    for theirs, mine in REAL_MCNET_KEYS.items():
        assert theirs in sd, theirs
        assert mine in ours and sd[theirs].shape == ours[mine].shape
    mapped, dropped = map_state_dict(sd, "mcnet")
    for theirs, mine in REAL_MCNET_KEYS.items():
        assert mapped[mine] is sd[theirs]
    assert set(REAL_MCNET_DECODER2_KEYS) <= set(dropped)
    assert all(k.startswith("decoder2.") for k in dropped)


@pytest.mark.parametrize("decoder", ["decoder1", "decoder"])
def test_mcnet_round_trip_reproduces_outputs(decoder):
    torch.manual_seed(3)
    net = VNet(VNetConfig(n_filters=2, num_classes=3))
    net.train()
    net(torch.randn(2, 1, 16, 16, 16))  # non-trivial BN statistics
    net.eval()
    sd = to_layout(net.state_dict(), "mcnet", decoder=decoder)
    assert all(k.startswith(("encoder.", decoder + ".")) for k in sd)
    assert "encoder.block_five.conv.0.weight" in sd and f"{decoder}.out_conv.weight" in sd
    mapped, dropped = map_state_dict(sd, "mcnet")
    assert dropped == [] and set(mapped) == set(net.state_dict())
    cfg = infer_vnet_config(mapped)
    assert cfg == VNetConfig(n_filters=2, num_classes=3)
    other = VNet(cfg)
    other.load_state_dict(mapped)
    other.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(other(x)["seg"], net(x)["seg"])


def test_data_parallel_prefix_is_stripped():
    net = VNet(VNetConfig(n_filters=2))
    for layout, sd in (("uamt", net.state_dict()), ("mcnet", to_layout(net.state_dict(), "mcnet"))):
        wrapped = {"module." + k: v for k, v in sd.items()}
        mapped, _ = map_state_dict(wrapped, layout)
        assert set(mapped) == set(net.state_dict())


def test_layout_mismatches_are_explained():
    plain = VNet(VNetConfig(n_filters=2)).state_dict()
    sdm = VNet(VNetConfig(n_filters=2, sdm_head=True, seg_form="sigmoid")).state_dict()
    with pytest.raises(LayoutError, match="uamt"):
        map_state_dict(plain, "sassnet")
    with pytest.raises(LayoutError, match="sassnet"):
        map_state_dict(sdm, "uamt")
    with pytest.raises(LayoutError, match="mcnet"):
        map_state_dict(to_layout(plain, "mcnet"), "uamt")
    with pytest.raises(LayoutError, match="encoder"):
        map_state_dict(plain, "mcnet")
    with pytest.raises(LayoutError, match="unknown layout"):
        map_state_dict(plain, "nnunet")
    with pytest.raises(LayoutError, match="no SDM head"):
        to_layout(sdm, "mcnet")
    # MC-Net's interpolating decoder2 alone cannot be our decoder
    net = VNet(VNetConfig(n_filters=2))
    sd = _mcnet_v1_state_dict(net)
    only_d2 = {k: v for k, v in sd.items() if not k.startswith("decoder1.")}
    with pytest.raises(LayoutError, match="transposed"):
        map_state_dict(only_d2, "mcnet")
    with pytest.raises(LayoutError, match="no decoder 'decoder7'"):
        map_state_dict(sd, "mcnet", decoder="decoder7")


def test_infer_config_rejects_inconsistent_heads():
    sd = VNet(VNetConfig(n_filters=2, num_classes=3, sdm_head=True)).state_dict()
    sd["out_conv.weight"] = torch.zeros(1, 2, 1, 1, 1)  # 1 SDM channel for 3 classes
    sd["out_conv.bias"] = torch.zeros(1)
    with pytest.raises(LayoutError, match="SDM head"):
        infer_vnet_config(sd)
    with pytest.raises(LayoutError, match="block_one"):
        infer_vnet_config({"conv.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------------------------------
# Width cap (max_filters)
# ---------------------------------------------------------------------------------------------------------------------

def test_width_cap_sets_stage_widths_and_sheds_deep_weights():
    plain = VNet(VNetConfig(n_filters=4, num_classes=3))
    capped = VNet(VNetConfig(n_filters=4, num_classes=3, max_filters=16))
    assert plain.config.widths == (4, 8, 16, 32, 64) and capped.config.widths == (4, 8, 16, 16, 16)
    assert capped.block_five.conv[0].weight.shape[:2] == (16, 16)
    assert capped.block_five_up.conv[0].weight.shape[:2] == (16, 16)  # ConvTranspose3d: (in, out, ...)
    assert capped.block_one.conv[0].weight.shape == plain.block_one.conv[0].weight.shape
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(capped) < 0.3 * count(plain)
    # the shipped hippocampus candidate: n16 capped at 64 has about a fifth of n16's weights
    assert VNetConfig(n_filters=16, max_filters=64).widths == (16, 32, 64, 64, 64)
    feats = capped.eval()(torch.randn(1, 1, 16, 16, 16), features=True)
    assert [f.shape[1] for f in feats["encoder"]] == [4, 8, 16, 16, 16]
    assert [f.shape[1] for f in feats["decoder"]] == [16, 16, 8, 4]
    assert feats["seg"].shape == (1, 3, 16, 16, 16)


def test_width_cap_round_trips_and_is_absent_from_uncapped_metadata():
    assert "max_filters" not in VNetConfig(n_filters=4).to_dict()  # the releases' network: metadata unchanged
    cfg = VNetConfig(n_filters=4, max_filters=24, sdm_head=True)
    assert cfg.to_dict()["max_filters"] == 24
    net = build_network("vnet", cfg.to_dict())
    assert net.config == cfg and net.config.widths == (4, 8, 16, 24, 24)
    inferred = infer_vnet_config(net.state_dict())
    assert inferred.max_filters == 24 and inferred.n_filters == 4 and inferred.sdm_head
    assert infer_vnet_config(VNet(VNetConfig(n_filters=4)).state_dict()).max_filters is None
    # a cap at or above 16n is the releases' widths
    assert VNetConfig(n_filters=4, max_filters=64).widths == (4, 8, 16, 32, 64)


@pytest.mark.parametrize("cap", [3, 0, 8.0, True])
def test_width_cap_below_first_width_or_not_an_integer_is_rejected(cap):
    with pytest.raises(ValueError, match="max_filters"):
        VNetConfig(n_filters=4, max_filters=cap)


# ---------------------------------------------------------------------------------------------------------------------
# Residual stages and encoder depths (the original V-Net's residual stages; a deeper encoder)
# ---------------------------------------------------------------------------------------------------------------------

def test_residual_block_adds_its_input_before_the_last_relu():
    from semisupseg.nets.vnet import ConvBlock

    torch.manual_seed(0)
    plain = ConvBlock(2, 4, 4, "none").eval()
    res = ConvBlock(2, 4, 4, "none", residual=True).eval()
    res.load_state_dict(plain.state_dict())  # the same keys: the last ReLU has no parameters
    x = torch.randn(1, 4, 6, 6, 6)
    pre = plain.conv[:-1](x)  # both convolutions, without the last ReLU
    assert torch.allclose(res(x), torch.relu(pre + x), atol=1e-6)
    assert torch.allclose(plain(x), torch.relu(pre), atol=1e-6) and not torch.allclose(res(x), plain(x))
    one = ConvBlock(1, 1, 4, "none", residual=True).eval()  # one input channel: broadcast, as in the paper
    x1 = torch.randn(1, 1, 6, 6, 6)
    assert one.residual and torch.allclose(one(x1), torch.relu(one.conv(x1) + x1), atol=1e-6)
    assert not ConvBlock(1, 3, 4, "none", residual=True).residual  # 3 -> 4 channels: no identity, stays plain


def test_residual_and_depths_build_train_and_round_trip_through_a_model_file(tmp_path):
    from semisupseg.checkpoint import load_model, make_card, save_model

    plain = VNet(VNetConfig(n_filters=4, num_classes=3, max_filters=16, sdm_head=True))
    cfg = VNetConfig(n_filters=4, num_classes=3, max_filters=16, sdm_head=True, residual=True,
                     encoder_depths=(2, 3, 3, 3, 3))
    net = VNet(cfg)
    # residual alone keeps the keys; deeper stages add convolutions (block_one 2 deep, block_two 3 deep)
    assert set(VNet(VNetConfig(n_filters=4, num_classes=3, max_filters=16, sdm_head=True,
                               residual=True)).state_dict()) == set(plain.state_dict())
    extra = set(net.state_dict()) - set(plain.state_dict())
    assert {k.split(".")[0] for k in extra} == {"block_one", "block_two"} and "block_two.conv.6.weight" in extra
    d = cfg.to_dict()
    assert d["residual"] is True and d["encoder_depths"] == [2, 3, 3, 3, 3]
    assert "residual" not in plain.config.to_dict() and "encoder_depths" not in plain.config.to_dict()
    assert build_network("vnet", d).config == cfg  # a JSON list becomes the tuple again
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 1, 16, 16, 16)
    out = net(x)
    (out["seg"].mean() + out["sdm"].mean()).backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.step()
    card = make_card(net, method="supervised", spacing_xyz=(1, 1, 1), patch_size_xyz=(16, 16, 16),
                     class_names=["background", "a", "b"])
    path = save_model(tmp_path / "m.pt", net, card)
    loaded, loaded_card = load_model(path)
    assert loaded.config == cfg and loaded_card.network["encoder_depths"] == [2, 3, 3, 3, 3]
    net.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x)["seg"], net(x)["seg"])


@pytest.mark.parametrize("kwargs", [{"encoder_depths": (1, 2, 3, 3)}, {"encoder_depths": (0, 2, 3, 3, 3)},
                                    {"encoder_depths": (1, 2, 3, 3, 3.0)}, {"residual": "yes"}])
def test_bad_depths_or_residual_flag_are_rejected(kwargs):
    with pytest.raises(ValueError, match="encoder_depths|residual"):
        VNetConfig(n_filters=4, **kwargs)
