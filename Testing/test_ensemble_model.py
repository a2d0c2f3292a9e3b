"""Ensemble model files: one network averaging its members' probabilities, built from model files, saved, loaded,
segmented with, refused with a clear line when the members do not fit together."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from semisupseg.checkpoint import load_model, make_card, read_card, save_model
from semisupseg.cli import main as cli_main
from semisupseg.ensembles import combine_models
from semisupseg.errors import CheckpointError
from semisupseg.inference.segment import SegmentOptions, segment
from semisupseg.nets import EnsembleConfig, EnsembleNet, VNet, VNetConfig, build_network
from semisupseg.volume import Volume


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net(seed: int, **cfg) -> VNet:
    torch.manual_seed(seed)
    cfg.setdefault("n_filters", 2)
    cfg.setdefault("num_classes", 3)
    net = VNet(VNetConfig(**cfg))
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 1, 16, 16, 16))  # batch-norm statistics that differ between seeds
    return net.eval()


def _save(tmp_path, name, net, **card_kw):
    card_kw.setdefault("method", "sgrs")
    card_kw.setdefault("spacing_xyz", (1.0, 1.0, 1.0))
    card_kw.setdefault("patch_size_xyz", (16, 16, 16))
    card_kw.setdefault("class_names", ["background", "anterior", "posterior"])
    training = card_kw.pop("training", None) or {"augmentation": "none", "perturb": "both", "labeled_cases": 20,
                                                 "unlabeled_cases": 120, "iterations": 3000, "seed": int(name[-1])}
    card = make_card(net, training=training, **card_kw)
    return save_model(tmp_path / f"{name}.pt", net, card)


def _mean_probabilities(nets, x):
    with torch.no_grad():
        return sum(n.probabilities(n(x)["seg"]) for n in nets) / len(nets)


def test_forward_is_the_mean_of_the_members_probabilities():
    members = [_net(1), _net(2, max_filters=8), _net(3, n_filters=4)]  # widths and caps may differ
    config = EnsembleConfig(members=[{"arch": "vnet", "config": m.config.to_dict()} for m in members],
                            in_channels=1, num_classes=3)
    ens = EnsembleNet(config)
    for target, source in zip(ens.members, members):
        target.load_state_dict(source.state_dict())
    ens.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        out = ens(x)
    expected = _mean_probabilities(members, x)
    torch.testing.assert_close(ens.probabilities(out["seg"]), expected, rtol=0, atol=1e-6)
    assert "sdm" not in out
    # members disagree somewhere, so the mean is not any one member's answer (the test can tell them apart)
    assert not torch.equal(expected.argmax(1), _mean_probabilities(members[:1], x).argmax(1))
    with pytest.raises(NotImplementedError):
        ens(x, features=True)


def test_sdm_is_averaged_only_when_every_member_has_a_head():
    a, b = _net(1, sdm_head=True), _net(2, sdm_head=True)
    cfg = EnsembleConfig(members=[{"arch": "vnet", "config": n.config.to_dict()} for n in (a, b)],
                         num_classes=3, sdm_head=True)
    ens = EnsembleNet(cfg)
    ens.members[0].load_state_dict(a.state_dict())
    ens.members[1].load_state_dict(b.state_dict())
    ens.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ens(x)["sdm"], (a(x)["sdm"] + b(x)["sdm"]) / 2, rtol=0, atol=1e-6)
    plain = _net(3)
    with pytest.raises(ValueError, match="member 1 has none"):
        EnsembleNet(EnsembleConfig(members=[{"arch": "vnet", "config": n.config.to_dict()} for n in (a, plain)],
                                   num_classes=3, sdm_head=True))


@pytest.mark.parametrize("members, message", [
    ([], "2-8 members"),
    ([{"arch": "vnet", "config": {}}], "2-8 members"),
    ([{"arch": "vnet"}, {"arch": "vnet", "config": {}}], "member 0"),
    ([{"arch": "ensemble", "config": {}}, {"arch": "vnet", "config": {}}], "itself an ensemble"),
])
def test_invalid_ensemble_configs(members, message):
    with pytest.raises(ValueError, match=message):
        EnsembleConfig(members=members)


def test_members_must_agree_with_the_whole():
    m = _net(1).config.to_dict()
    with pytest.raises(ValueError, match="member 0 takes 1 channel"):
        build_network("ensemble", {"members": [{"arch": "vnet", "config": m}] * 2, "num_classes": 2})


def test_combined_file_round_trips_and_segments_like_the_mean(tmp_path):
    nets = [_net(1), _net(2)]
    paths = [_save(tmp_path, f"m{i + 1}", n) for i, n in enumerate(nets)]
    ens, card = combine_models(paths)
    assert card.arch == "ensemble" and card.method == "sgrs" and card.class_names[1:] == ["anterior", "posterior"]
    assert card.training["ensemble_of"] == 2 and [m["file"] for m in card.training["members"]] == ["m1.pt", "m2.pt"]
    assert [m["seed"] for m in card.training["members"]] == [1, 2]
    # what the members share reads as the ensemble's own; what they do not (the seed) does not
    assert card.training["augmentation"] == "none" and card.training["unlabeled_cases"] == 120
    assert "seed" not in card.training
    out = save_model(tmp_path / "ens.pt", ens, card)
    model, loaded = load_model(out)
    assert isinstance(model, EnsembleNet) and loaded == card and read_card(out).arch == "ensemble"
    rng = np.random.default_rng(0)
    image = Volume(rng.normal(size=(20, 24, 18)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    opts = SegmentOptions(fast=False, device="cpu", compute_sdm=True, compute_entropy=True)
    result = segment(image, model, loaded, opts)
    singles = [segment(image, n, read_card(p), opts).probabilities.array for n, p in zip(nets, paths)]
    np.testing.assert_allclose(result.probabilities.array, (singles[0] + singles[1]) / 2, atol=1e-5)
    assert result.sdm is not None and result.sdm_source != "network"  # no SDM head: the SDM of its labels
    # the fast path (batch norm folded into the convolutions, channels_last) keeps the labels
    fast = segment(image, model, loaded, SegmentOptions(device="cpu", fast_min_dice=0.0))
    assert (fast.labels.array == result.labels.array).mean() > 0.99


def test_members_that_preprocess_differently_are_refused_naming_the_file(tmp_path):
    a = _save(tmp_path, "m1", _net(1))
    for name, kw, field in [("m2", {"spacing_xyz": (1.0, 1.0, 2.0)}, "spacing_xyz"),
                            ("m3", {"class_names": ["background", "head", "tail"]}, "class_names"),
                            ("m4", {"normalization": {"kind": "minmax"}}, "normalization"),
                            ("m5", {"patch_size_xyz": (32, 16, 16)}, "patch_size_xyz")]:
        b = _save(tmp_path, name, _net(2), **kw)
        with pytest.raises(CheckpointError, match=f"its {field} is") as info:
            combine_models([a, b])
        assert info.value.path == b and str(b) in str(info.value)
    with pytest.raises(CheckpointError, match="2-8 model files"):
        combine_models([a])
    # two runs' best.pt: the message names each by its folder, not "best.pt ... best.pt's"
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    training = {"augmentation": "none", "perturb": "both", "iterations": 3000, "seed": 1}
    first = _save(tmp_path / "r1", "best", _net(1), training=training)
    second = _save(tmp_path / "r2", "best", _net(2), spacing_xyz=(1.0, 1.0, 2.0), training=training)
    with pytest.raises(CheckpointError) as info:
        combine_models([first, second])
    assert f"with {first}: its spacing_xyz" in str(info.value) and f"that of {first} is" in str(info.value)


def test_an_ensemble_is_not_nested_and_differing_flips_mean_no_flip_tta(tmp_path):
    a = _save(tmp_path, "m1", _net(1))
    b = _save(tmp_path, "m2", _net(2), training={"augmentation": "papers"})
    ens, card = combine_models([a, b])
    assert card.training["augmentation"] == "none"  # m2 trained on flips, m1 never did
    e = save_model(tmp_path / "e.pt", ens, card)
    with pytest.raises(CheckpointError, match="itself an ensemble") as info:
        combine_models([e, a])
    assert info.value.path == e


def test_a_card_with_malformed_members_is_refused_on_load(tmp_path):
    path = _save(tmp_path, "m1", _net(1))
    ens, card = combine_models([path, path])
    out = save_model(tmp_path / "e.pt", ens, card)
    payload = torch.load(out, weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["network"]["members"][1] = {"arch": "vnet", "config": {"n_filters": {"deep": 2}}}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"members\[1\] config n_filters") as info:
        load_model(tmp_path / "bad.pt")
    assert info.value.path == tmp_path / "bad.pt"
    meta["network"]["members"][1] = {"arch": "vnet", "config": {"n_filters": 10 ** 6}}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match="n_filters must be an integer"):
        load_model(tmp_path / "huge.pt")


def test_cli_ensemble_then_segment_and_info(tmp_path, capsys):
    paths = [_save(tmp_path, f"m{i}", _net(i)) for i in (1, 2, 3)]
    out = tmp_path / "ens.pt"
    assert cli_main(["ensemble", *map(str, paths), "-o", str(out), "--half"]) == 0
    said = capsys.readouterr().out
    assert "3 sgrs models" in said and "float16" in said
    stored = torch.load(out, weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert any(k.startswith("members.2.") for k in stored)
    assert cli_main(["ensemble", *map(str, paths[:2]), "-o", str(out)]) == 2  # never overwrites by default
    assert "exists" in capsys.readouterr().err
    assert cli_main(["info", str(out)]) == 0
    said = capsys.readouterr().out
    assert "mean probabilities of 3 members: 3 x vnet" in said
    for i in (1, 2, 3):  # one line per member (files differ: named), not a JSON dump of the summaries
        assert re.search(rf"^  member {i}: +sgrs, seed {i}, 3000 iterations, 20 labeled \+ 120 unlabeled, from m{i}\.pt$",
                         said, re.M)
    assert '"members"' not in said and "\n  members:" not in said
    lines = read_card(out).summary_lines()  # what `semisupseg models` and the Slicer model selector show
    assert [ln.split(":", 1)[0].strip() for ln in lines if ln.strip().startswith("member ")] == \
        ["member 1", "member 2", "member 3"]
    assert not any('"members"' in ln or ln.strip().startswith("members:") for ln in lines)
    assert any("mean probabilities of 3 members: 3 x vnet" in ln for ln in lines)
    image = tmp_path / "img.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(18, 20, 16)).astype(np.float32)),
                    str(image))
    assert cli_main(["segment", str(image), "--model", str(out), "-o", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "img_label.nii.gz").exists()


def test_the_card_check_and_the_network_allow_the_same_number_of_members():
    from semisupseg.checkpoint import check_card_dict
    from semisupseg.nets.ensemble import MAX_MEMBERS

    member = {"arch": "vnet", "config": {"n_filters": 2}}
    base = {"network": {"members": [member] * MAX_MEMBERS}}
    check_card_dict(base)  # as many as the network allows: accepted
    with pytest.raises(ValueError, match=f"more than {MAX_MEMBERS}"):
        check_card_dict({"network": {"members": [member] * (MAX_MEMBERS + 1)}})


def test_export_of_an_ensemble_asks_which_member_and_refuses_a_wrong_one(tmp_path):
    from semisupseg.checkpoint import export_peer_checkpoint

    a = _save(tmp_path, "m1", _net(1))
    b = _save(tmp_path, "m2", _net(2))
    ens = save_model(tmp_path / "e.pt", *combine_models([a, b]))
    with pytest.raises(CheckpointError, match=r"ensemble of 2 networks; pick the one to export with --member 1\.\.2") \
            as info:
        export_peer_checkpoint(ens, tmp_path / "e.pth", "uamt")
    assert info.value.path == ens
    for bad in (0, 3):
        with pytest.raises(CheckpointError, match=f"member {bad} is not in 1..2"):
            export_peer_checkpoint(ens, tmp_path / "e.pth", "uamt", member=bad)
    with pytest.raises(CheckpointError, match="not an ensemble: there is no member 1") as info:
        export_peer_checkpoint(a, tmp_path / "a.pth", "uamt", member=1)
    assert info.value.path == a
    assert not list(tmp_path.glob("*.pth"))  # nothing written by a refusal


def test_an_exported_member_is_that_member_file_in_the_peer_layout(tmp_path, capsys):
    from semisupseg.checkpoint import export_peer_checkpoint

    a = _save(tmp_path, "m1", _net(1))
    b = _save(tmp_path, "m2", _net(2, max_filters=8))  # members may differ in width
    ens = save_model(tmp_path / "e.pt", *combine_models([a, b]))
    for k, member_file in ((1, a), (2, b)):
        direct, _ = export_peer_checkpoint(member_file, tmp_path / f"direct{k}.pth", "uamt")
        dst, side = export_peer_checkpoint(ens, tmp_path / f"member{k}.pth", "uamt", member=k)
        want, got = torch.load(direct, weights_only=True), torch.load(dst, weights_only=True)
        assert list(got) == list(want)
        assert all(torch.equal(got[key], want[key]) for key in want)
        card = json.loads(side.read_text())
        assert card["arch"] == "vnet" and card["network"] == read_card(member_file).network
        assert card["training"]["seed"] == k and card["training"]["member_of"] == {"file": "e.pt", "member": k,
                                                                                   "of": 2}
        assert "members" not in card["training"] and "ensemble_of" not in card["training"]
        assert card["exported"]["member"] == k
    assert cli_main(["export-checkpoint", str(ens), "-o", str(tmp_path / "cli1.pth"), "--layout", "uamt",
                     "--member", "1"]) == 0
    assert "member 1 of" in capsys.readouterr().out
    cli, want = torch.load(tmp_path / "cli1.pth", weights_only=True), torch.load(tmp_path / "direct1.pth",
                                                                                  weights_only=True)
    assert all(torch.equal(cli[key], want[key]) for key in want)
    # the exported member reads back through import-checkpoint as the same network (width cap inferred)
    assert cli_main(["import-checkpoint", str(tmp_path / "member2.pth"), "-o", str(tmp_path / "back.pt"),
                     "--layout", "uamt", "--spacing", "1", "--classes", "background", "anterior", "posterior",
                     "--patch-size", "16", "16", "16"]) == 0
    back, _ = load_model(tmp_path / "back.pt")
    original, _ = load_model(b)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x)["seg"], original(x)["seg"])


def test_cli_ensemble_of_different_methods_names_them(tmp_path, capsys):
    a = _save(tmp_path, "m1", _net(1))
    b = _save(tmp_path, "m2", _net(2), method="supervised")
    assert cli_main(["ensemble", str(a), str(b), "-o", str(tmp_path / "mix.pt")]) == 0
    assert "2 sgrs + supervised models, mean of their probabilities" in capsys.readouterr().out
    assert read_card(tmp_path / "mix.pt").method == "ensemble"


def test_members_read_from_training_runs_are_recorded_with_their_run_folder(tmp_path):
    runs = []
    for i, rel in ((1, "sgrs_s1/last.pt"), (2, "sgrs_s2/best.pt"), (3, "sgrs_s3/kept/it003000.pt")):
        (tmp_path / rel).parent.mkdir(parents=True)
        net = _net(i)
        runs.append(save_model(tmp_path / rel, net, make_card(net, method="sgrs", spacing_xyz=(1.0, 1.0, 1.0),
                                                               patch_size_xyz=(16, 16, 16),
                                                               training={"seed": i})))
    _, card = combine_models(runs)
    assert [m["file"] for m in card.training["members"]] == ["sgrs_s1/last.pt", "sgrs_s2/best.pt",
                                                             "sgrs_s3/kept/it003000.pt"]
