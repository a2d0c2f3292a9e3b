"""Model files: round trip, safe loading (nothing executed), clear errors naming the file, resume state, CLI."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from semisupseg.checkpoint import (FORMAT_KEY, FORMAT_VERSION, ModelCard, check_weights_only, export_peer_checkpoint,
                                   import_peer_checkpoint, load_model, load_state, load_state_dict_file, make_card, read_card, save_model,
                                   save_state, sidecar_path, half_precision_state)
from semisupseg.cli import main as cli_main
from semisupseg.errors import CheckpointError, InputError, OutputExistsError
from semisupseg.nets import VNet, VNetConfig
from semisupseg.nets.vnet import to_layout


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: one intra-op thread is fastest and immune to spin-waiting on a loaded 2-core machine
    (measured: 0.03 s vs 0.1–3 s per forward with 2 threads while other jobs run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_net(**cfg) -> VNet:
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=2, **cfg))
    net.train()
    with torch.no_grad():
        net(torch.randn(2, cfg.get("in_channels", 1), 16, 16, 16))  # non-trivial batch-norm statistics
    return net.eval()


def _card(net, **kw) -> ModelCard:
    kw.setdefault("method", "sassnet")
    kw.setdefault("spacing_xyz", (1.25, 1.25, 1.25))
    kw.setdefault("patch_size_xyz", (64, 64, 32))
    return make_card(net, **kw)


def _assert_names(exc_info, path: Path) -> None:
    assert isinstance(exc_info.value, CheckpointError)
    assert exc_info.value.path == Path(path)
    assert str(path) in str(exc_info.value)


# ---------------------------------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------------------------------

def test_round_trip_restores_weights_card_and_outputs(tmp_path):
    net = _trained_net(num_classes=3, sdm_head=True)
    card = _card(net, class_names=["background", "anterior", "posterior"], label_values=[0, 1, 2],
                 normalization={"kind": "zscore", "clip_percentiles": [0.5, 99.5]},
                 training={"data": "Task04_Hippocampus", "labeled": 8, "iterations": 6000, "val_dice": 0.873})
    path = save_model(tmp_path / "model.pt", net, card)
    model, loaded = load_model(path, device="auto" if not torch.cuda.is_available() else "cpu")
    assert loaded == card and next(model.parameters()).device.type == "cpu"
    assert not model.training and isinstance(model, VNet) and model.config == net.config
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = net(x), model(x)
    torch.testing.assert_close(a["seg"], b["seg"], rtol=0, atol=0)
    torch.testing.assert_close(a["sdm"], b["sdm"], rtol=0, atol=0)
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # the file itself is a plain weights_only payload
    payload = torch.load(path, weights_only=True)
    assert payload[FORMAT_KEY] == FORMAT_VERSION and isinstance(payload["metadata"], str)
    assert json.loads(payload["metadata"])["class_names"] == ["background", "anterior", "posterior"]
    # the sidecar is a readable copy of the card; read_card uses the .pt, not the sidecar
    side = sidecar_path(path)
    assert side == tmp_path / "model.json" and ModelCard.from_dict(json.loads(side.read_text())) == card
    side.write_text("{ stale")
    assert read_card(path) == card
    with pytest.raises(CheckpointError, match="pass the model file"):
        read_card(side)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            load_model(path, device="cuda")
    assert read_card(path).spacing_zyx == (1.25, 1.25, 1.25) and read_card(path).patch_size_zyx == (32, 64, 64)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_half_precision_file_is_half_the_size_and_loads_as_float32(tmp_path):
    net = _trained_net(num_classes=2, sdm_head=True)
    card = _card(net)
    full = save_model(tmp_path / "full.pt", net, card)
    half = save_model(tmp_path / "half.pt", net, card, half=True)
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert all(v.dtype == torch.int64 for k, v in stored.items() if k.endswith("num_batches_tracked"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model, loaded = load_model(half)
    assert loaded == card and all(p.dtype == torch.float32 for p in model.parameters())
    for k, v in net.state_dict().items():  # the weights are the float16-rounded originals
        expected = v.half().float() if v.is_floating_point() else v
        assert torch.equal(model.state_dict()[k], expected), k
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x)["seg"].argmax(1), model(x)["seg"].argmax(1))


def test_half_precision_refuses_weights_beyond_float16_range(tmp_path):
    net = _trained_net(num_classes=2)
    with torch.no_grad():
        next(net.parameters())[0].fill_(1e6)
    with pytest.raises(CheckpointError, match="beyond float16's range") as info:
        save_model(tmp_path / "m.pt", net, _card(net), half=True)
    _assert_names(info, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
    assert half_precision_state({"n": torch.tensor(3)})["n"].dtype == torch.int64


def test_card_defaults_and_unknown_fields_are_kept(tmp_path):
    net = _trained_net()
    card = _card(net)
    assert card.class_names == ["background", "class1"] and card.label_values == [0, 1]
    assert card.arch == "vnet" and card.network == net.config.to_dict() and card.in_channels == 1
    assert card.created and card.package_version
    d = card.to_dict()
    d["future_field"] = {"x": 1}
    back = ModelCard.from_dict(d)
    assert back.extra == {"future_field": {"x": 1}} and back.to_dict()["future_field"] == {"x": 1}


def test_training_summary_is_made_json_safe(tmp_path):
    import numpy as np

    net = _trained_net()
    card = _card(net, training={"iterations": np.int64(300), "val_dice": np.float32(0.75), "hd95": float("nan"),
                                "cases": [{"case": "a", "dice": np.float64(0.5), "hd95": np.nan}],
                                "data_dir": tmp_path, "patch": (1, 2, 3)})
    path = save_model(tmp_path / "m.pt", net, card)
    t = read_card(path).training
    assert t["iterations"] == 300 and type(t["iterations"]) is int and t["val_dice"] == 0.75
    assert t["hd95"] is None and t["cases"] == [{"case": "a", "dice": 0.5, "hd95": None}]
    assert t["data_dir"] == str(tmp_path) and t["patch"] == [1, 2, 3]
    bad = _card(net, training={"sampler": object()})
    with pytest.raises(CheckpointError, match=r"card.training.sampler"):
        save_model(tmp_path / "bad.pt", net, bad)
    assert not (tmp_path / "bad.pt").exists()


def test_overwrite_rules_and_no_sidecar(tmp_path):
    net = _trained_net()
    card = _card(net)
    path = save_model(tmp_path / "m.pt", net, card)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError) as ei:
        save_model(path, net, card)
    assert str(path) in str(ei.value) and path.read_bytes() == before
    # an existing sidecar also blocks
    other = tmp_path / "n.pt"
    sidecar_path(other).write_text("{}")
    with pytest.raises(OutputExistsError):
        save_model(other, net, card)
    assert not other.exists()
    save_model(other, net, card, overwrite=True)
    assert read_card(other) == card
    solo = save_model(tmp_path / "solo.pt", net, card, sidecar=False)
    assert solo.exists() and not sidecar_path(solo).exists()


def test_a_full_disk_is_one_oserror_naming_the_file_and_the_old_file_stays(tmp_path, monkeypatch):
    """torch's zip writer turned a failed write into "RuntimeError: ... unexpected pos 558144 vs 558040"; the file
    is now serialised first and written plainly, so a full disk is ENOSPC naming the model file, and the file it was
    to replace is still whole."""
    import errno
    import io as _io

    import semisupseg.checkpoint as ckpt

    net = _trained_net()
    path = save_model(tmp_path / "m.pt", net, _card(net))
    before = path.read_bytes()
    real_open = ckpt.atomic_open

    class Full(_io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(target, mode="w", overwrite=False, **kw):
        import contextlib

        @contextlib.contextmanager
        def opened():
            with real_open(target, mode, overwrite, **kw):
                yield _io.BufferedWriter(Full(), buffer_size=1024)
        return opened()

    monkeypatch.setattr(ckpt, "atomic_open", full_disk)
    with pytest.raises(OSError) as info:
        save_model(path, net, _card(net), overwrite=True)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".m.pt")]


def test_save_rejects_inconsistent_cards(tmp_path):
    net = _trained_net()
    card = _card(net)
    card.class_names = ["background", "a", "b"]
    card.label_values = [0, 1, 2]
    with pytest.raises(CheckpointError, match="classes"):
        save_model(tmp_path / "m.pt", net, card)
    card = _card(net)
    card.network = dict(card.network, n_filters=8)
    with pytest.raises(CheckpointError, match="differs"):
        save_model(tmp_path / "m.pt", net, card)
    card = _card(net)
    card.spacing_xyz = (1.0, 0.0, 1.0)
    with pytest.raises(CheckpointError, match="spacing"):
        save_model(tmp_path / "m.pt", net, card)
    assert list(tmp_path.iterdir()) == []


def test_ddp_style_wrapper_is_unwrapped(tmp_path):
    net = _trained_net()
    wrapped = torch.nn.DataParallel(net)
    path = save_model(tmp_path / "m.pt", wrapped, _card(wrapped))
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert set(sd) == set(net.state_dict())


# ---------------------------------------------------------------------------------------------------------------------
# Bad files: clear CheckpointError naming the file, nothing executed
# ---------------------------------------------------------------------------------------------------------------------

class _RunsCodeOnUnpickle:
    """Unpickling this would call ``os.mkdir(marker)``: the classic pickle code-execution trap."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_needs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    net = _trained_net()
    torch.save({FORMAT_KEY: 1, "metadata": _card(net).to_json(), "state_dict": net.state_dict(),
                "x": _RunsCodeOnUnpickle(marker)}, evil)
    for fn in (load_model, read_card, load_state, load_state_dict_file):
        with pytest.raises(CheckpointError, match="nothing was executed") as ei:
            fn(evil)
        _assert_names(ei, evil)
        assert "posix.mkdir" in str(ei.value) or "nt.mkdir" in str(ei.value)
        assert not marker.exists()
    # the trap is real: an unsafe load would have run it
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


def _bad_files(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("this is a text file, not a model\n")
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(bytes(range(7, 256)) * 40)
    zf = tmp_path / "archive.pt"
    with zipfile.ZipFile(zf, "w") as z:
        z.writestr("readme.txt", "hello")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.pt"
    return {"text": text, "random": rnd, "zip": zf, "empty": empty, "missing": missing, "dir": tmp_path}


@pytest.mark.parametrize("kind,message", [("text", "not a PyTorch checkpoint"), ("random", "not a PyTorch checkpoint"),
                                          ("zip", "zip archive but not"), ("empty", "empty"),
                                          ("missing", "no such file"), ("dir", "directory")])
def test_not_a_checkpoint(tmp_path, kind, message):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=message) as ei:
        load_model(path)
    _assert_names(ei, path)


def test_torch_file_without_card(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a SemiSupSeg model file") as ei:
        load_model(path)
    _assert_names(ei, path)


def test_raw_peer_state_dict_points_to_import(tmp_path):
    path = tmp_path / "best_model.pth"
    torch.save(VNet(VNetConfig(n_filters=2)).state_dict(), path)
    with pytest.raises(CheckpointError, match="import-checkpoint") as ei:
        load_model(path)
    _assert_names(ei, path)
    torch.save({"state_dict": VNet(VNetConfig(n_filters=2)).state_dict(), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="import-checkpoint"):
        read_card(path)


def _payload(net, card=None, **over):
    card = card or _card(net)
    payload = {FORMAT_KEY: FORMAT_VERSION, "metadata": card.to_json(), "state_dict": dict(net.state_dict())}
    payload.update(over)
    return payload


def test_newer_format_is_refused(tmp_path):
    net = _trained_net()
    path = tmp_path / "future.pt"
    torch.save(_payload(net, **{FORMAT_KEY: FORMAT_VERSION + 1}), path)
    with pytest.raises(CheckpointError, match="newer SemiSupSeg") as ei:
        load_model(path)
    _assert_names(ei, path)
    assert f"format {FORMAT_VERSION + 1}" in str(ei.value)
    torch.save(_payload(net, **{FORMAT_KEY: "1"}), path)
    with pytest.raises(CheckpointError, match="invalid format version"):
        load_model(path)


def test_mismatched_shapes_missing_and_unexpected_keys_are_listed(tmp_path):
    net = _trained_net()
    bigger = _trained_net(num_classes=3)  # different head shapes
    path = tmp_path / "m.pt"
    torch.save(_payload(net, state_dict=dict(bigger.state_dict())), path)
    with pytest.raises(CheckpointError, match="shape mismatch") as ei:
        load_model(path)
    _assert_names(ei, path)
    assert "out_conv.weight (3, 2, 1, 1, 1) vs (2, 2, 1, 1, 1)" in str(ei.value)

    sd = dict(net.state_dict())
    for k in ("block_nine.conv.0.weight", "block_nine.conv.0.bias", "out_conv.bias"):
        del sd[k]
    sd["out_conv2.weight"] = torch.zeros(1, 2, 1, 1, 1)
    torch.save(_payload(net, state_dict=sd), path)
    with pytest.raises(CheckpointError) as ei:
        load_model(path)
    msg = str(ei.value)
    assert "3 missing key(s)" in msg and "block_nine.conv.0.weight" in msg and "out_conv.bias" in msg
    assert "1 unexpected key(s): out_conv2.weight" in msg

    many = {k: v for k, v in net.state_dict().items() if not k.startswith("block_f")}
    torch.save(_payload(net, state_dict=many), path)
    with pytest.raises(CheckpointError, match=r"\(\+\d+ more\)"):
        load_model(path)


def test_broken_cards_are_reported(tmp_path):
    net = _trained_net()
    path = tmp_path / "m.pt"
    torch.save(_payload(net, metadata="{not json"), path)
    with pytest.raises(CheckpointError, match="model card") as ei:
        load_model(path)
    _assert_names(ei, path)
    d = _card(net).to_dict()
    del d["spacing_xyz"]
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    with pytest.raises(CheckpointError, match="lacks spacing_xyz"):
        read_card(path)
    d = _card(net).to_dict()
    d["arch"] = "transunet"
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    with pytest.raises(CheckpointError, match="unknown network architecture"):
        load_model(path)
    d = _card(net).to_dict()
    d["network"]["normalization"] = "layernorm"
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        load_model(path)
    torch.save(_payload(net, state_dict={"a": 1}), path)
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(path)


def test_card_inference_recommendations_round_trip_and_are_checked(tmp_path):
    net = _trained_net()
    card = _card(net, inference={"keep_largest": True})
    path = save_model(tmp_path / "m.pt", net, card)
    assert read_card(path).inference == {"keep_largest": True}
    assert any(line.startswith("inference:") and "keep_largest=True" in line for line in card.summary_lines())
    assert _card(net).inference == {} and not any(ln.startswith("inference:") for ln in _card(net).summary_lines())
    d = card.to_dict()
    d["inference"] = {"keep_largest": "yes"}
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    with pytest.raises(CheckpointError, match="inference keep_largest must be bool"):
        read_card(path)
    d["inference"] = {"keep_largest": False, "smoothing_mm": 1.5}  # a newer version's option: kept, not used
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    assert read_card(path).inference == {"keep_largest": False, "smoothing_mm": 1.5}
    d["inference"] = [True]
    torch.save(_payload(net, metadata=json.dumps(d)), path)
    with pytest.raises(CheckpointError, match="inference must be an object"):
        read_card(path)


# ---------------------------------------------------------------------------------------------------------------------
# Resume state helpers (used by the training engine)
# ---------------------------------------------------------------------------------------------------------------------

def test_save_state_round_trip_and_checks(tmp_path):
    net = _trained_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    net(torch.randn(2, 1, 16, 16, 16))["seg"].mean().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    payload = {"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": 17, "rng": torch.get_rng_state(),
               "generator": gen.get_state(), "sampler": {"order": [3, 1, 2], "seed": 4, "pos": (1, 2)},
               "config": json.dumps({"lr": 0.01}), "best_dice": 0.5, "none": None}
    path = save_state(tmp_path / "run" / "last.pt", payload)
    back = load_state(path)
    assert back["iteration"] == 17 and back["sampler"] == payload["sampler"] and back["none"] is None
    assert torch.equal(back["rng"], payload["rng"]) and torch.equal(back["generator"], payload["generator"])
    opt2 = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.01
    m0 = next(iter(opt.state.values()))["momentum_buffer"]
    assert torch.equal(next(iter(opt2.state.values()))["momentum_buffer"], m0)
    # default overwrite=True for run checkpoints; overwrite=False refuses
    save_state(path, {"iteration": 18})
    assert load_state(path)["iteration"] == 18
    with pytest.raises(OutputExistsError):
        save_state(path, {"iteration": 19}, overwrite=False)
    import numpy as np

    legacy = tmp_path / "legacy.pt"  # pre-1.6 torch file format (old releases) loads too
    torch.save({"iteration": 3, "w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert load_state(legacy)["iteration"] == 3
    with pytest.raises(TypeError, match=r"payload\['sampler'\]\['state'\].*numpy"):
        save_state(tmp_path / "bad.pt", {"sampler": {"state": np.zeros(3)}})
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(TypeError, match="dict"):
        save_state(tmp_path / "bad.pt", [1, 2])  # type: ignore[arg-type]
    check_weights_only({"a": [torch.zeros(1), (1, 2.0, "x", None, True)], "s": torch.Size([2]), 3: b"x"})
    with pytest.raises(TypeError):
        check_weights_only({"f": lambda: 0})
    notdict = tmp_path / "list.pt"
    torch.save([1], notdict)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_state(notdict)


_Pair = __import__("collections").namedtuple("_Pair", "a b")


def _weights_only_loadable(obj) -> bool:
    import io

    buf = io.BytesIO()
    torch.save({"x": obj}, buf)
    buf.seek(0)
    try:
        torch.load(buf, weights_only=True)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("obj", [torch.nn.Parameter(torch.zeros(2)), torch.float16, torch.device("cpu"),
                                 torch.Size([2, 3]), {1, 2}, 1j, b"raw", frozenset([1]), {1: 2, None: 3},
                                 __import__("collections").OrderedDict(a=1), __import__("collections").Counter(a=1),
                                 _Pair(1, 2), range(3), Path("x"),
                                 __import__("numpy").float64(1.0)])
def test_check_weights_only_agrees_with_torch_load(obj):
    ok = _weights_only_loadable(obj)
    try:
        check_weights_only({"x": obj})
        accepted = True
    except TypeError:
        accepted = False
    assert accepted == ok, (obj, ok)


def test_save_state_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = save_state(tmp_path / "last.pt", {"iteration": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_state(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ---------------------------------------------------------------------------------------------------------------------
# Import of peer releases and the CLI
# ---------------------------------------------------------------------------------------------------------------------

def _fixture_io(peer_fixtures, name):
    return torch.load(peer_fixtures / f"{name}.io.pt", weights_only=True)


def test_cli_import_sassnet_fixture_end_to_end(peer_fixtures, tmp_path, capsys):
    src = peer_fixtures / "sassnet_dtc_vnet_sdf.state_dict.pt"
    out = tmp_path / "sassnet.pt"
    rc = cli_main(["import-checkpoint", str(src), "-o", str(out), "--layout", "sassnet", "--spacing", "0.625",
                   "--classes", "background", "left_atrium"])
    assert rc == 0 and out.exists() and sidecar_path(out).exists()
    assert "n_filters=4" in capsys.readouterr().out
    model, card = load_model(out)
    assert card.network["sdm_head"] and card.network["seg_form"] == "sigmoid" and card.network["n_filters"] == 4
    assert card.class_names == ["background", "left_atrium"] and card.spacing_xyz == (0.625, 0.625, 0.625)
    assert card.patch_size_xyz == (112, 112, 80) and card.training["layout"] == "sassnet"
    assert len(card.training["sha256"]) == 64
    io = _fixture_io(peer_fixtures, "sassnet_dtc_vnet_sdf")
    with torch.no_grad():
        o = model(io["input"])
    torch.testing.assert_close(o["sdm"], io["output0"], atol=1e-5, rtol=0)
    torch.testing.assert_close(o["seg"], io["output1"], atol=1e-5, rtol=0)
    # refuses to overwrite, then does with --overwrite
    assert cli_main(["import-checkpoint", str(src), "-o", str(out), "--layout", "sassnet", "--spacing", "0.625"]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["import-checkpoint", str(src), "-o", str(out), "--layout", "sassnet", "--spacing", "0.625",
                     "0.625", "1.0", "--overwrite", "--patch-size", "96", "96", "64"]) == 0
    card = read_card(out)
    assert card.spacing_xyz == (0.625, 0.625, 1.0) and card.patch_size_xyz == (96, 96, 64)
    assert card.class_names == ["background", "foreground"]


def test_cli_import_uamt_fixture_and_info(peer_fixtures, tmp_path, capsys):
    src = peer_fixtures / "uamt_vnet.state_dict.pt"
    out = tmp_path / "uamt.pt"
    assert cli_main(["import-checkpoint", str(src), "-o", str(out), "--layout", "uamt", "--spacing", "0.625",
                     "--n-filters", "4"]) == 0
    model, card = load_model(out)
    io = _fixture_io(peer_fixtures, "uamt_vnet")
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"])["seg"], io["output0"], atol=1e-5, rtol=0)
    assert card.network["seg_form"] == "softmax" and not card.network["sdm_head"]
    capsys.readouterr()
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("uamt", "0.625 x 0.625 x 0.625 mm", "112 x 112 x 80", "0=background, 1=foreground",
                   "n_filters=4", "parameters", "layout:"):
        assert needle in text, needle
    assert cli_main(["info", str(out), "--json"]) == 0
    assert ModelCard.from_dict(json.loads(capsys.readouterr().out)) == card
    # info on a raw state_dict says how to import it
    assert cli_main(["info", str(src)]) == 2
    err = capsys.readouterr().err
    assert "import-checkpoint" in err and str(src) in err


def test_import_errors(peer_fixtures, tmp_path, capsys):
    sass = peer_fixtures / "sassnet_dtc_vnet_sdf.state_dict.pt"
    out = tmp_path / "o.pt"
    with pytest.raises(CheckpointError, match="layout 'uamt'") as ei:
        import_peer_checkpoint(sass, "uamt", (0.625,) * 3)
    _assert_names(ei, sass)
    with pytest.raises(CheckpointError, match="n_filters 4"):
        import_peer_checkpoint(sass, "sassnet", (0.625,) * 3, n_filters=16)
    with pytest.raises(CheckpointError, match="3 class names"):
        import_peer_checkpoint(sass, "sassnet", (0.625,) * 3, class_names=["bg", "la", "x"])
    with pytest.raises(CheckpointError, match="spacing"):
        import_peer_checkpoint(sass, "sassnet", (0.625, -1, 1))
    # our own model files need no import
    net = _trained_net()
    ours = save_model(tmp_path / "ours.pt", net, _card(net))
    with pytest.raises(CheckpointError, match="no import needed"):
        import_peer_checkpoint(ours, "uamt", (1, 1, 1))
    # --spacing is required (without a card beside the weights)
    assert cli_main(["import-checkpoint", str(sass), "-o", str(out), "--layout", "sassnet"]) == 2
    assert "--spacing MM is needed" in capsys.readouterr().err
    assert cli_main(["import-checkpoint", str(sass), "-o", str(out), "--layout", "sassnet", "--spacing", "1", "2"]) == 2
    assert "one or three" in capsys.readouterr().err
    assert not out.exists()


def test_import_mcnet_layout_reproduces_outputs(peer_fixtures, tmp_path):
    """An MC-Net-style file (encoder + decoder1 + an interpolating decoder2) built from the UA-MT fixture weights."""
    sd = torch.load(peer_fixtures / "uamt_vnet.state_dict.pt", weights_only=True)
    mc = {"module." + k: v for k, v in to_layout(sd, "mcnet").items()}
    mc["module.decoder2.block_five_up.conv.1.weight"] = torch.randn(32, 64, 3, 3, 3)
    mc["module.decoder2.out_conv.weight"] = torch.randn(2, 4, 1, 1, 1)
    src = tmp_path / "mcnet_best.pth"
    torch.save(mc, src)
    out = tmp_path / "mcnet.pt"
    assert cli_main(["import-checkpoint", str(src), "-o", str(out), "--layout", "mcnet", "--spacing", "0.625",
                     "--classes", "background", "left_atrium"]) == 0
    model, card = load_model(out)
    assert card.training["dropped_prefixes"] == ["decoder2"] and card.method == "mcnet"
    io = _fixture_io(peer_fixtures, "uamt_vnet")
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"])["seg"], io["output0"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["groupnorm", "instancenorm", "none"])
def test_import_detects_normalization(tmp_path, norm):
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=16 if norm == "groupnorm" else 2, normalization=norm, num_classes=3)).eval()
    src = tmp_path / "peer.pth"
    # the 2019-2020 releases' .pth files may be in the legacy (pre-1.6, non-zip) torch format
    torch.save(net.state_dict(), src, _use_new_zipfile_serialization=(norm != "none"))
    model, card = import_peer_checkpoint(src, "uamt", (1.0, 1.0, 1.0))
    assert card.network == net.config.to_dict() and card.class_names == ["background", "class1", "class2"]
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["seg"], net(x)["seg"])


# ---------------------------------------------------------------------------------------------------------------------
# Export back to the peer layouts
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,layout", [("sassnet_dtc_vnet_sdf", "sassnet"), ("uamt_vnet", "uamt")])
def test_import_then_export_gives_back_the_release_file(peer_fixtures, tmp_path, capsys, name, layout):
    """import-checkpoint followed by export-checkpoint returns the release's state_dict key for key, bit for bit."""
    src = peer_fixtures / f"{name}.state_dict.pt"
    ours, back = tmp_path / "ours.pt", tmp_path / "back.pth"
    assert cli_main(["import-checkpoint", str(src), "-o", str(ours), "--layout", layout, "--spacing", "0.625"]) == 0
    assert cli_main(["export-checkpoint", str(ours), "-o", str(back), "--layout", layout]) == 0
    assert "back.json" in capsys.readouterr().out
    original = load_state_dict_file(src)
    exported = torch.load(back, weights_only=True)
    assert isinstance(exported, dict) and sorted(exported) == sorted(original)
    for key, value in original.items():
        assert torch.equal(exported[key], value), key
    card = json.loads(sidecar_path(back).read_text())
    assert card["spacing_xyz"] == [0.625] * 3 and card["exported"]["layout"] == layout
    assert card["exported"]["from"] == "ours.pt" and len(card["exported"]["sha256"]) == 64


def test_export_mcnet_layout_reimports_to_the_same_outputs(tmp_path):
    net = _trained_net(num_classes=3)
    ours = save_model(tmp_path / "ours.pt", net, _card(net, method="mean-teacher"))
    peer = tmp_path / "peer.pth"
    export_peer_checkpoint(ours, peer, "mcnet")
    keys = list(torch.load(peer, weights_only=True))
    assert keys and all(k.startswith(("encoder.", "decoder1.")) for k in keys)
    again, _ = import_peer_checkpoint(peer, "mcnet", (1.25, 1.25, 1.25))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x)["seg"], net(x)["seg"], atol=0, rtol=0)


def test_export_errors_name_the_file_and_keep_existing_outputs(tmp_path, capsys):
    plain = _trained_net()                       # no SDM head
    with_sdm = _trained_net(sdm_head=True)
    plain_pt = save_model(tmp_path / "plain.pt", plain, _card(plain, method="supervised"))
    sdm_pt = save_model(tmp_path / "sdm.pt", with_sdm, _card(with_sdm))
    with pytest.raises(CheckpointError, match="SDM head") as ei:
        export_peer_checkpoint(plain_pt, tmp_path / "x.pth", "sassnet")
    _assert_names(ei, plain_pt)
    with pytest.raises(CheckpointError, match="has one") as ei:
        export_peer_checkpoint(sdm_pt, tmp_path / "x.pth", "uamt")
    _assert_names(ei, sdm_pt)
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(CheckpointError, match="model file being exported"):
        export_peer_checkpoint(sdm_pt, sdm_pt, "sassnet", overwrite=True)

    existing = tmp_path / "old.pth"
    existing.write_bytes(b"the user's file")
    with pytest.raises(OutputExistsError):
        export_peer_checkpoint(sdm_pt, existing, "sassnet")
    assert existing.read_bytes() == b"the user's file" and not sidecar_path(existing).exists()
    assert cli_main(["export-checkpoint", str(sdm_pt), "-o", str(existing), "--layout", "sassnet"]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"the user's file"
    assert cli_main(["export-checkpoint", str(sdm_pt), "-o", str(existing), "--layout", "sassnet",
                     "--overwrite"]) == 0
    assert sorted(torch.load(existing, weights_only=True)) == sorted(with_sdm.state_dict())

    from semisupseg.nets.sbnet import SBNet, SBNetConfig

    sb = SBNet(SBNetConfig(n_filters=2)).eval()
    sb_pt = save_model(tmp_path / "sb.pt", sb, _card(sb, method="sbnet"))
    with pytest.raises(CheckpointError, match="only 'vnet'") as ei:
        export_peer_checkpoint(sb_pt, tmp_path / "z.pth", "sassnet")
    _assert_names(ei, sb_pt)

    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a model")
    assert cli_main(["export-checkpoint", str(garbage), "-o", str(tmp_path / "y.pth"), "--layout", "uamt"]) == 2
    assert str(garbage) in capsys.readouterr().err
