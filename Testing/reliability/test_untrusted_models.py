"""Model files from untrusted sources: they never run code, and every reader refuses them with one clear error.

Three families of hostile files, fed to every path that reads a model file:

* **pickled code**: five payloads (a ``__reduce__`` calling ``os.system``, ``subprocess.call``, ``builtins.exec``,
  ``builtins.eval`` and ``open(marker, "w")``) in eleven containers (the bare object; nested in the payload dict,
  in the state_dict, in the card's place; as the first argument of a tensor's rebuild call; in its backward-hooks
  dict; in the storage record of a hand-written zip whose other tensors are valid; in the legacy torch format; raw
  pickles of protocol 2 and 5; a valid model file with one extra entry). Each payload would create a marker file;
  the marker must not exist after all readers ran, and a control proves each file *does* run its code when it is
  unpickled without ``weights_only``;
* **cards**: wrong JSON types, out-of-range values, future versions, extra keys, odd references (an architecture
  naming a Python function, a sidecar that says something else, an oversized card) — refused or ignored as
  :mod:`semisupseg.checkpoint` documents;
* **tensors**: weights that do not fit the declared network (shapes, keys, dtypes, NaN), and declared sizes that
  would need huge memory (a card with ``n_filters`` 10^6 or a 10^5 patch, a tensor header claiming 4 GB, a
  0.3 MB zip whose deflated pickle unpacks to a 300 MB card) — refused without allocating (peak RSS of a child process).

Readers: ``semisupseg.checkpoint`` (read_model_file, read_card, load_model, load_state, load_state_dict_file,
import/export), the CLI (``segment``, ``info``, ``import-checkpoint``, ``export-checkpoint``, ``models add``,
``preview --model``), the catalogue (``add``, ``entries``, ``register_run``), the warm worker (in process and as
``semisupseg worker``) and the Slicer library (``SegmentLogic.start``, ``model_choices``, ``run_model_classes``).
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from slicer_guard import require_slicer
import torch

from helpers import tiny_model
from semisupseg.catalogue import ModelCatalogue
from semisupseg.checkpoint import (FORMAT_KEY, export_peer_checkpoint, import_peer_checkpoint,
                                   load_model, load_state, load_state_dict_file, read_card, read_model_file)
from semisupseg.cli import main as cli_main
from semisupseg.errors import InputError
from semisupseg.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SCAN = REPO / "Testing" / "data" / "hippocampus_003_image.nii.gz"
SLICER_MODULE = REPO / "SemiSupSeg"


# ----------------------------------------------------------------------------------------------------------------------
# Hostile payloads
# ----------------------------------------------------------------------------------------------------------------------

class Reduce:
    """Pickles as ``fn(*args)``: what a hostile model file does to run code when it is unpickled."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def code_payloads(marker: Path) -> Dict[str, Reduce]:
    """Five ways of running code at unpickling time; each creates ``marker``."""
    m = str(marker)
    return {
        "os.system": Reduce(os.system, (f"touch '{m}'",)),
        "subprocess": Reduce(subprocess.call, ([sys.executable, "-c", f"open({m!r}, 'w').close()"],)),
        "builtins.exec": Reduce(builtins.exec, (f"open({m!r}, 'w').close()",)),
        "builtins.eval": Reduce(builtins.eval, (f"open({m!r}, 'w').close()",)),
        "open-for-write": Reduce(builtins.open, (m, "w")),
    }


class FakeStorage:
    """A storage record of a hand-written torch zip: ``numel`` float32 elements claimed, ``data`` bytes stored,
    ``location`` as written in the record (a hostile file puts an object there)."""

    def __init__(self, key: str, numel: int, data: bytes, location: object = "cpu"):
        self.key, self.numel, self.data, self.location = key, numel, data, location


class FakeTensor:
    """A tensor of a hand-written torch zip: rebuilt by torch from its storage record with this ``shape``."""

    def __init__(self, storage: FakeStorage, shape: tuple):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for s in reversed(self.shape):
            stride.insert(0, acc)
            acc *= s
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


def write_torch_zip(path: Path, obj: object) -> Path:
    """Write ``obj`` (plain containers, FakeTensors, anything picklable) as torch's zip format by hand, so storage
    records and tensor headers can say anything."""
    storages: List[FakeStorage] = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, FakeStorage):
                storages.append(o)
                return ("storage", torch.FloatStorage, o.key, o.location, o.numel)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data)
    return path


def write_zip_bomb(path: Path, card_bytes: int) -> Path:
    """A torch-format zip whose deflated ``data.pkl`` unpacks to a payload with a ``card_bytes``-long card (the
    file itself is about a thousandth of that). Written in chunks: the card never exists in memory here."""
    import struct

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as fh:
            fh.write(b"\x80\x02}" + b"X" + struct.pack("<I", len(FORMAT_KEY)) + FORMAT_KEY.encode() + b"K\x01s")
            fh.write(b"X" + struct.pack("<I", 8) + b"metadata" + b"X" + struct.pack("<I", card_bytes))
            chunk = b" " * (1 << 24)
            for start in range(0, card_bytes, len(chunk)):
                fh.write(chunk[:card_bytes - start])
            fh.write(b"s.")
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def fake_state(state: Dict[str, torch.Tensor]) -> Dict[str, FakeTensor]:
    """A real state_dict as FakeTensors (same bytes), for hand-written zips that load like the real file."""
    out = {}
    for i, (k, v) in enumerate(state.items()):
        v = v.detach().float().contiguous()
        out[k] = FakeTensor(FakeStorage(str(i), v.numel(), v.numpy().tobytes()), v.shape)
    return out


def _save_quiet(obj, path: Path, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, path, **kw)
    return path


def write_container(kind: str, evil: Reduce, good: dict, path: Path) -> Path:
    """Write ``evil`` into ``path`` the way ``kind`` says; ``good`` is a valid model file's payload."""
    state = dict(good["state_dict"])
    payload = {FORMAT_KEY: 1, "metadata": good["metadata"], "state_dict": state}
    first = next(iter(state))
    if kind == "zip-bare":
        return _save_quiet(evil, path)
    if kind == "zip-nested-in-payload":
        return _save_quiet({**payload, "notes": {"deep": [1, (2, {"x": evil})]}}, path)
    if kind == "zip-in-state-dict":
        return _save_quiet({**payload, "state_dict": {**state, "extra.weight": evil}}, path)
    if kind == "zip-as-card":
        return _save_quiet({**payload, "metadata": evil}, path)
    if kind == "zip-tensor-rebuild-arg":
        fake = Reduce(torch._utils._rebuild_tensor_v2, (evil, 0, (1,), (1,), False, collections.OrderedDict()))
        return _save_quiet({**payload, "state_dict": {**state, first: fake}}, path)
    if kind == "zip-tensor-backward-hooks":
        t = state[first]
        hooks = collections.OrderedDict([("hook", evil)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fake = Reduce(torch._utils._rebuild_tensor_v2, (t.storage(), 0, tuple(t.shape), t.stride(), False, hooks))
        return _save_quiet({**payload, "state_dict": {**state, first: fake}}, path)
    if kind == "zip-storage-record":  # hand-written zip: valid tensors, the first one's storage location is code
        fakes = fake_state(state)
        fakes[first].storage.location = evil
        return write_torch_zip(path, {**payload, "state_dict": fakes})
    if kind == "legacy-torch-format":
        return _save_quiet({**payload, "state_dict": {**state, "extra.weight": evil}}, path,
                           _use_new_zipfile_serialization=False)
    if kind in ("raw-pickle-p2", "raw-pickle-p5"):
        path.write_bytes(pickle.dumps({**payload, "state_dict": {first: evil}},
                                      protocol=2 if kind.endswith("p2") else 5))
        return path
    raise ValueError(kind)


CONTAINERS = ("zip-bare", "zip-nested-in-payload", "zip-in-state-dict", "zip-as-card", "zip-tensor-rebuild-arg",
              "zip-tensor-backward-hooks", "zip-storage-record", "legacy-torch-format", "raw-pickle-p2",
              "raw-pickle-p5")
PAYLOADS = ("os.system", "subprocess", "builtins.exec", "builtins.eval", "open-for-write")


def unpickle_unsafely(path: Path) -> None:
    """What a careless reader does (the control: each hostile file must run its code here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if zipfile.is_zipfile(path) or path.read_bytes()[:1] != b"\x80" or _is_legacy_torch(path):
                torch.load(path, weights_only=False)
            else:
                with open(path, "rb") as fh:
                    pickle.load(fh)
        except Exception:  # noqa: BLE001 - the code has run by the time the rest of the file fails to make sense
            pass


def _is_legacy_torch(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh) == 0x1950A86A20F9469CFC6C  # torch's legacy magic number comes first
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("good") / "good.pt", classes=("background", "hippocampus"),
                      spacing=(1.0, 1.0, 1.0), patch=(16, 16, 16))


@pytest.fixture(scope="module")
def good(good_file) -> dict:
    return torch.load(good_file, weights_only=True)


def good_card(good: dict) -> dict:
    return json.loads(good["metadata"])


def write_model(path: Path, good: dict, card: object = None, state: object = None, **payload) -> Path:
    """A model file like ``good`` with its card dict / state_dict / payload entries replaced."""
    out = {FORMAT_KEY: 1, "metadata": good["metadata"], "state_dict": dict(good["state_dict"])}
    if card is not None:
        out["metadata"] = card if isinstance(card, str) else json.dumps(card)
    if state is not None:
        out["state_dict"] = state
    out.update(payload)
    return _save_quiet(out, path)


# ----------------------------------------------------------------------------------------------------------------------
# Every reader, each returning the error text it gave (AssertionError when it did not refuse)
# ----------------------------------------------------------------------------------------------------------------------

def _raises(fn: Callable, *args, **kw) -> str:
    try:
        fn(*args, **kw)
    except InputError as exc:  # CheckpointError and CatalogueError are InputErrors
        return str(exc)
    raise AssertionError(f"{getattr(fn, '__name__', fn)} accepted the file")


def _cli(argv: List[str], one_line: bool = True) -> str:
    """Run the CLI in this process; it must exit 2 with one ``error:`` line (``one_line=False``: the first line
    is checked and returned)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)
    text = err.getvalue().strip()
    assert rc == 2, f"{argv[0]}: exit {rc}, stderr {text!r}"
    lines = text.splitlines()
    assert (len(lines) == 1 or not one_line) and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


def _worker(request: dict) -> str:
    out = io.StringIO()
    assert Worker(out).handle(request) is True
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "error" and event["kind"] == "input", event
    return event["error"]




def _slicer_segment_logic(path: Path, tmp: Path) -> str:
    slicer = require_slicer()
    from SemiSupSegLib.segment_logic import SegmentLogic, SegmentRequest

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")

    class NoWorker:  # the refusal must come before anything is sent to a worker
        def __getattr__(self, name):
            raise AssertionError(f"the worker was used ({name}) for a refused model")

    logic = SegmentLogic(scene, None, catalogue=ModelCatalogue(tmp / "home", shipped_dir=tmp / "none"),
                         worker=NoWorker())
    return _raises(logic.start, SegmentRequest(input_node=node, model=str(path)))


def _slicer_model_choices(path: Path, tmp: Path) -> str:
    require_slicer()
    from SemiSupSegLib.segment_logic import model_choices

    shipped = tmp / "shipped_mc"
    shipped.mkdir(exist_ok=True)
    shutil.copy(path, shipped / "hostile.pt")
    choices = {name: text for _, name, text in model_choices(ModelCatalogue(tmp / "home_mc", shipped_dir=shipped))}
    assert choices["hostile"].startswith("cannot be used: ") and "hostile.pt" in choices["hostile"], choices
    return choices["hostile"]


def _slicer_run_classes(path: Path, tmp: Path) -> str:
    require_slicer()
    from SemiSupSegLib.training_logic import run_model_classes

    run = tmp / "run_rc"
    run.mkdir(exist_ok=True)
    shutil.copy(path, run / "best.pt")
    assert run_model_classes(run) == (None, None)
    return "(None, None) for best.pt"


def _catalogue_entries(path: Path, tmp: Path) -> str:
    shipped = tmp / "shipped"
    shipped.mkdir(exist_ok=True)
    shutil.copy(path, shipped / "hostile.pt")
    entry = {e.name: e for e in ModelCatalogue(tmp / "home_e", shipped_dir=shipped).entries()}["hostile"]
    assert entry.card is None and entry.error and "hostile.pt" in entry.error, entry
    return entry.error


def _catalogue_run(path: Path, tmp: Path) -> str:
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    shutil.copy(path, run / "best.pt")
    entry = ModelCatalogue(tmp / "home_r", shipped_dir=tmp / "none").register_run(run)
    assert entry.card is None and entry.error and "best.pt" in entry.error, entry
    return entry.error


READERS: Dict[str, Callable[[Path, Path], str]] = {
    "checkpoint.read_model_file": lambda p, t: _raises(read_model_file, p),
    "checkpoint.read_card": lambda p, t: _raises(read_card, p),
    "checkpoint.load_model": lambda p, t: _raises(load_model, p),
    "checkpoint.load_state": lambda p, t: _raises(load_state, p),
    "checkpoint.load_state_dict_file": lambda p, t: _raises(load_state_dict_file, p),
    "checkpoint.import_peer_checkpoint": lambda p, t: _raises(import_peer_checkpoint, p, "sassnet", (1, 1, 1)),
    "checkpoint.export_peer_checkpoint": lambda p, t: _raises(export_peer_checkpoint, p, t / "peer.pth", "uamt"),
    "cli segment": lambda p, t: _cli(["segment", "--model", str(p), "-o", str(t / "seg"), "--no-fast", str(SCAN)]),
    "cli info": lambda p, t: _cli(["info", str(p)]),
    "cli info --json": lambda p, t: _cli(["info", "--json", str(p)]),
    "cli import-checkpoint": lambda p, t: _cli(["import-checkpoint", str(p), "-o", str(t / "imported.pt"),
                                                "--layout", "sassnet", "--spacing", "1"]),
    "cli export-checkpoint": lambda p, t: _cli(["export-checkpoint", str(p), "-o", str(t / "exp.pth"),
                                                "--layout", "uamt"]),
    "cli models add": lambda p, t: _cli(["models", "--home", str(t / "home_cli"), "add", str(p)]),
    "cli preview --model": lambda p, t: _cli(["preview", str(SCAN), "--model", str(p), "-o", str(t / "p.png")]),
    "catalogue.add": lambda p, t: _raises(ModelCatalogue(t / "home_a", shipped_dir=t / "none").add, p),
    "catalogue.entries": _catalogue_entries,
    "catalogue.register_run": _catalogue_run,
    "worker load": lambda p, t: _worker({"op": "load", "id": 1, "model": str(p)}),
    "worker segment": lambda p, t: _worker({"op": "segment", "id": 2, "input": str(SCAN), "model": str(p),
                                            "output_dir": str(t / "wout")}),
    "slicer SegmentLogic.start": _slicer_segment_logic,
    "slicer model_choices": _slicer_model_choices,
    "slicer run_model_classes": _slicer_run_classes,
}
#: readers given ``path`` itself, whose message must name it (the others read a copy and check its name)
NAMES_FILE = set(READERS) - {"slicer run_model_classes", "slicer model_choices", "catalogue.entries",
                             "catalogue.register_run"}
#: outputs no reader may leave behind
OUTPUTS = ("seg", "peer.pth", "peer.json", "imported.pt", "imported.json", "exp.pth", "exp.json", "p.png", "wout",
           "home_cli/models.json", "home_a/models.json")


def run_every_reader(path: Path, tmp: Path, readers=READERS) -> Dict[str, str]:
    """Feed ``path`` to ``readers`` (names of :data:`READERS`; all by default); returns reader -> its error text;
    asserts each refused, named the file and wrote nothing."""
    texts = {}
    for name in readers:
        try:
            texts[name] = READERS[name](path, tmp)
        except pytest.skip.Exception:
            continue
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        if name in NAMES_FILE:
            assert path.name in texts[name], f"{name} does not name the file: {texts[name]}"
    left = [o for o in OUTPUTS if (tmp / o).exists()]
    assert not left, f"outputs left behind: {left}"
    return texts


# ----------------------------------------------------------------------------------------------------------------------
# Pickled code
# ----------------------------------------------------------------------------------------------------------------------

#: the low-level loaders every other reader goes through (cheap: every payload of every container meets them)
CORE_READERS = ("checkpoint.read_model_file", "checkpoint.load_model", "checkpoint.load_state_dict_file")


def check_hostile(container: str, payload_name: str, good: dict, tmp_path: Path, readers) -> int:
    """Write one hostile file, feed it to ``readers``, check nothing ran and nothing changed, then run the control.
    Returns the number of refusals checked."""
    marker = tmp_path / f"PWNED-{container}-{payload_name}"
    path = write_container(container, code_payloads(marker)[payload_name], good,
                           tmp_path / f"hostile-{container}-{payload_name}.pt")
    work = tmp_path / f"work-{container}-{payload_name}"
    work.mkdir()
    before = path.read_bytes()
    texts = run_every_reader(path, work, readers)
    assert not marker.exists(), f"{payload_name} in {container}: code ran"
    assert path.read_bytes() == before
    refused = texts["checkpoint.read_model_file"]
    if container == "raw-pickle-p5":  # the weights_only unpickler stops at protocol 5's first FRAME opcode
        assert "not a readable PyTorch checkpoint" in refused and "nothing was executed" in refused, refused
    else:
        assert "refused" in refused and "nothing was executed" in refused, refused
    unpickle_unsafely(path)
    assert marker.exists(), f"control: {payload_name} in {container} did not run when unpickled unsafely"
    return len(texts)


@pytest.mark.parametrize("container", CONTAINERS)
def test_pickled_code_never_runs_in_any_reader(container, good, tmp_path):
    """Every reader meets this container with one of the payloads (a different one per container), the core
    loaders meet all five; each refuses, naming the file, and no marker appears. The control then unpickles each
    file unsafely: its marker appears, so the file really carried working code. (All readers x all payloads:
    the slow test below.)"""
    rotated = PAYLOADS[CONTAINERS.index(container) % len(PAYLOADS)]
    check_hostile(container, rotated, good, tmp_path, READERS)
    for payload_name in PAYLOADS:
        if payload_name != rotated:
            check_hostile(container, payload_name, good, tmp_path, CORE_READERS)


@pytest.mark.slow
def test_every_payload_in_every_container_meets_every_reader(good, tmp_path):
    """The whole matrix: 5 payloads x 10 containers x every reader (about a minute)."""
    checked = sum(check_hostile(c, p, good, tmp_path, READERS) for c in CONTAINERS for p in PAYLOADS)
    assert checked >= len(CONTAINERS) * len(PAYLOADS) * (len(READERS) - 3)  # the Slicer ones skip without slicer


@pytest.mark.slow
def test_the_worker_process_and_segment_process_refuse_hostile_files(good, tmp_path):
    """The real processes (``semisupseg segment``, ``semisupseg worker``): exit code / error event, one line, no
    traceback, no marker."""
    marker = tmp_path / "PWNED"
    path = write_container("zip-in-state-dict", code_payloads(marker)["os.system"], good, tmp_path / "hostile.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    seg = subprocess.run([sys.executable, "-m", "semisupseg", "segment", "--model", str(path), "-o",
                          str(tmp_path / "out"), str(SCAN)], capture_output=True, text=True, env=env, timeout=120)
    assert seg.returncode == 2 and "Traceback" not in seg.stderr, seg.stderr
    assert [ln for ln in seg.stderr.splitlines() if ln.strip()] == [seg.stderr.strip()] and str(path) in seg.stderr
    requests = [{"op": "load", "id": "a", "model": str(path)},
                {"op": "segment", "id": "b", "input": str(SCAN), "model": str(path), "output_dir": str(tmp_path / "w")},
                {"op": "shutdown", "id": "c"}]
    worker = subprocess.run([sys.executable, "-m", "semisupseg", "worker"], input="".join(
        json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, env=env, timeout=120)
    events = [json.loads(ln) for ln in worker.stdout.splitlines()]
    errors = {e["id"]: e for e in events if e["event"] == "error"}
    assert set(errors) == {"a", "b"} and all(e["kind"] == "input" and str(path) in e["error"]
                                             for e in errors.values()), events
    assert events[-1]["event"] == "bye" and worker.returncode == 0 and "Traceback" not in worker.stderr
    assert not marker.exists() and not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Cards
# ----------------------------------------------------------------------------------------------------------------------

#: (field, value, words of the refusal) — wrong JSON types: never coerced
WRONG_TYPES = [
    ("class_names", "ab", "class_names must be a list of strings"),
    ("class_names", ["background", 1], "class_names must be a list of strings"),
    ("label_values", [0, 1.5], "label_values must be a list of integers"),
    ("label_values", [False, True], "label_values must be a list of integers"),
    ("label_values", ["0", "1"], "label_values must be a list of integers"),
    ("spacing_xyz", "111", "spacing_xyz must be 3 numbers"),
    ("spacing_xyz", [1, 1, True], "spacing_xyz must be 3 numbers"),
    ("spacing_xyz", [1, 1], "spacing_xyz must be 3 numbers"),
    ("spacing_xyz", {"x": 1}, "spacing_xyz must be 3 numbers"),
    ("patch_size_xyz", [16.5, 16, 16], "patch_size_xyz must be 3 integers"),
    ("patch_size_xyz", [16, 16, None], "patch_size_xyz must be 3 integers"),
    ("in_channels", True, "in_channels must be an integer"),
    ("in_channels", "1", "in_channels must be an integer"),
    ("method", 5, "method must be a string"),
    ("arch", None, "arch must be a string"),
    ("arch", ["vnet"], "arch must be a string"),
    ("network", [], "network must be an object"),
    ("network", "vnet", "network must be an object"),
    ("normalization", "zscore", "normalization must be an object"),
    ("training", ["x"], "training must be an object"),
    ("extra", [1], "extra must be an object"),
    ("format_version", "1", "format_version must be an integer"),
    ("created", 20240101, "created must be a string"),
]

#: (field, value, words) — right types, values outside the documented ranges
OUT_OF_RANGE = [
    ("spacing_xyz", [0, 1, 1], "3 positive millimetre values"),
    ("spacing_xyz", [-1.0, 1, 1], "3 positive millimetre values"),
    ("spacing_xyz", [1e-9, 1, 1], "outside 0.001-1000 mm"),
    ("spacing_xyz", [1e9, 1, 1], "outside 0.001-1000 mm"),
    ("patch_size_xyz", [0, 16, 16], "3 positive voxel counts"),
    ("patch_size_xyz", [10 ** 5, 16, 16], "too large"),
    ("patch_size_xyz", [1024, 1024, 1024], "too large"),
    ("in_channels", 0, "in_channels must be 1-64"),
    ("in_channels", 10 ** 6, "in_channels must be 1-64"),
    ("class_names", ["background"], "at least one class"),
    ("class_names", ["background", "background"], "distinct"),
    ("label_values", [0, -1], "distinct non-negative"),
    ("label_values", [0, 0], "distinct non-negative"),
    ("label_values", [0, 10 ** 6], "at most 65535"),
    ("format_version", 0, "format_version must be a positive integer"),
    ("format_version", 2, "newer SemiSupSeg"),
    ("method", "", "method must be a non-empty string"),
]


#: readers a bad card meets (one per kind of consumer: library, CLI, catalogue, worker, Slicer)
CARD_READERS = ("checkpoint.read_card", "checkpoint.load_model", "cli segment", "cli info", "catalogue.entries",
                "worker load", "slicer SegmentLogic.start")


def _card_with(good: dict, field: str, value) -> dict:
    card = good_card(good)
    card[field] = value
    return card


@pytest.mark.parametrize("field, value, words", WRONG_TYPES + OUT_OF_RANGE,
                         ids=[f"{f}={v!r}"[:40] for f, v, _ in WRONG_TYPES + OUT_OF_RANGE])
def test_bad_card_fields_are_refused_by_every_reader(field, value, words, good, tmp_path):
    path = write_model(tmp_path / "card.pt", good, card=_card_with(good, field, value))
    work = tmp_path / "work"
    work.mkdir()
    texts = run_every_reader(path, work, CARD_READERS)
    assert words in texts["checkpoint.read_card"] and "model card" in texts["checkpoint.read_card"], texts
    assert words in texts["cli info"] and words in texts["catalogue.entries"]


def test_too_many_classes_and_a_huge_card_are_refused(good, tmp_path):
    many = [f"c{i}" for i in range(1001)]
    path = write_model(tmp_path / "classes.pt", good, card={**good_card(good), "class_names": many,
                                                            "label_values": list(range(1001))})
    assert "more than 1000" in _raises(read_card, path)
    card = {**good_card(good), "training": {"notes": "x" * (5 << 20)}}
    path = write_model(tmp_path / "bigcard.pt", good, card=card)
    assert "characters long" in _raises(read_card, path)


@pytest.mark.parametrize("metadata, words", [
    ("{not json", "unreadable model card"), ("[1, 2]", "not a JSON object"), ("null", "not a JSON object"),
    ('{"method": "x"}', "lacks"), (b'{"method": "x"}', "no model card"), ({"method": "x"}, "no model card"),
    (None, "no model card"), ('{"spacing_xyz": NaN}', "spacing_xyz"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"in_channels": ' + "9" * 5000 + "}", "invalid model card"),
])
def test_card_that_is_not_a_json_object_is_refused(metadata, words, good, tmp_path):
    card = good_card(good)
    if isinstance(metadata, str) and metadata.startswith('{"spacing_xyz": NaN'):
        metadata = json.dumps(card).replace('"spacing_xyz": [1.0, 1.0, 1.0]', '"spacing_xyz": [NaN, 1.0, 1.0]')
        assert "NaN" in metadata
    path = _save_quiet({FORMAT_KEY: 1, "metadata": metadata, "state_dict": dict(good["state_dict"])},
                       tmp_path / "meta.pt")
    text = _raises(read_model_file, path)
    assert words in text and path.name in text
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(path, shipped / "meta.pt")
    entry = ModelCatalogue(tmp_path / "home", shipped_dir=shipped).entries()[0]  # listing never raises
    assert entry.card is None and words in entry.error


@pytest.mark.parametrize("version, words", [(2, "newer SemiSupSeg"), (10 ** 9, "newer SemiSupSeg"),
                                            ("1", "invalid format version"), (True, "invalid format version"),
                                            (0, "invalid format version"), (1.0, "invalid format version"),
                                            (None, "invalid format version")])
def test_unknown_and_malformed_format_versions_are_refused(version, words, good, tmp_path):
    path = write_model(tmp_path / "version.pt", good, **{FORMAT_KEY: version})
    work = tmp_path / "work"
    work.mkdir()
    texts = run_every_reader(path, work, CARD_READERS)
    assert words in texts["checkpoint.load_model"] and words in texts["cli segment"]


def test_extra_top_level_keys_are_kept_and_ignored(good, tmp_path):
    """A newer minor revision's fields: kept in ``extra``, shown by ``info``, not interpreted; the model works."""
    card = {**good_card(good), "future_field": {"x": [1, 2]}, "calibration": 0.5}
    path = write_model(tmp_path / "future.pt", good, card=card)
    model, loaded = load_model(path)
    assert loaded.extra == {"future_field": {"x": [1, 2]}, "calibration": 0.5}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["info", str(path)]) == 0
    assert "future_field:" in out.getvalue() and "calibration:" in out.getvalue()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 16, 16, 16))["seg"].shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("change, words", [
    ({"arch": "os.system"}, "unknown network architecture"),
    ({"arch": "semisupseg.nets.vnet.VNet"}, "unknown network architecture"),
    ({"arch": "../../../tmp/evil"}, "unknown network architecture"),
    ({"network": {"n_filters": 4, "__class__": "os.system"}}, "cannot rebuild"),
    ({"network_extra": True, "network": {"n_filters": 4, "attention": True}}, "cannot rebuild"),
    ({"network": {"n_filters": 4, "normalization": "layernorm"}}, "cannot rebuild"),
    ({"network": {"n_filters": "4"}}, "n_filters must be an integer"),
    ({"network": {"n_filters": [4]}}, "network n_filters must be an integer"),
    ({"network": {"n_filters": 4, "encoder_depths": ["deep"]}}, "up to 16 numbers"),
    ({"network": {"n_filters": 4, "encoder_depths": list(range(17))}}, "up to 16 numbers"),
    ({"network": {"n_filters": 4, "dropout_p": 5.0}}, "cannot rebuild"),
])
def test_cards_pointing_somewhere_odd_are_refused(change, words, good, tmp_path):
    card = good_card(good)
    for key, value in change.items():
        card[key] = {**card[key], **value} if isinstance(value, dict) and key in card else value
    path = write_model(tmp_path / "odd.pt", good, card=card)
    text = _raises(load_model, path)
    assert words in text and path.name in text, text


def test_the_sidecar_is_never_believed(good, good_file, tmp_path):
    """A ``model.json`` beside the file that says other classes, another spacing or points at another file is
    ignored by every reader: the card inside the ``.pt`` is the only one used."""
    path = tmp_path / "model.pt"
    shutil.copy(good_file, path)
    lie = {**good_card(good), "class_names": ["background", "tumour"], "spacing_xyz": [9, 9, 9],
           "arch": "os.system", "path": "/etc/passwd", "state_dict": "../other.pt"}
    (tmp_path / "model.json").write_text(json.dumps(lie))
    assert read_card(path).class_names == ["background", "hippocampus"]
    assert load_model(path)[1].spacing_xyz == (1.0, 1.0, 1.0)
    entry = ModelCatalogue(tmp_path / "home", shipped_dir=tmp_path / "none").add(path)
    assert entry.classes == ["hippocampus"] and entry.spacing_xyz == (1.0, 1.0, 1.0)
    assert "os.system" not in json.dumps(entry.to_dict())
    text = _raises(read_card, tmp_path / "model.json")
    assert "JSON copy of a model card" in text


def test_unknown_normalization_option_is_refused_when_used(good, tmp_path):
    card = {**good_card(good), "normalization": {"kind": "zscore", "gamma": 2}}
    path = write_model(tmp_path / "norm.pt", good, card=card)
    text = _cli(["segment", "--model", str(path), "-o", str(tmp_path / "seg"), str(SCAN)])
    assert "unknown normalization options ['gamma']" in text and not (tmp_path / "seg").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------------------------------

def _state(good) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in good["state_dict"].items()}


def _first_weight(state) -> str:
    return next(k for k, v in state.items() if v.ndim == 5)


def test_tensors_that_do_not_fit_are_refused_naming_keys_and_shapes(good, tmp_path):
    state = _state(good)
    key = _first_weight(state)
    shape = tuple(state[key].shape)
    cases = []

    s = dict(state)
    s[key] = torch.zeros(shape[1], shape[0], *shape[2:]) if shape[0] != shape[1] else torch.zeros(1, *shape)
    cases.append(("shape", s, [key, str(tuple(s[key].shape)), str(shape), "shape mismatch"]))
    s = dict(state)
    del s[key]
    cases.append(("missing", s, ["1 missing key(s)", key]))
    s = {**state, "block_ten.conv.0.weight": torch.zeros(2, 2, 3, 3, 3)}
    cases.append(("unexpected", s, ["1 unexpected key(s)", "block_ten.conv.0.weight"]))
    s = {**state, key: state[key].to(torch.int32)}
    cases.append(("dtype", s, ["dtype mismatch", key, "torch.int32"]))
    s = {**state, key: state[key].to(torch.complex64)}
    cases.append(("complex", s, ["dtype mismatch", key, "torch.complex64"]))
    s = {**state, key: torch.full(shape, float("nan"))}
    cases.append(("nan", s, ["non-finite weights", key]))
    s = {**state, key: torch.full(shape, float("inf"))}
    cases.append(("inf", s, ["non-finite weights", key]))
    s = {k: v.reshape(-1) for k, v in state.items()}
    cases.append(("flattened", s, ["shape mismatch", "(+"]))
    card = good_card(good)
    card["network"] = {**card["network"], "n_filters": 8}  # the card declares another network than the weights
    cases.append(("card-vs-weights", None, ["shape mismatch"]))
    for name, s, words in cases:
        path = write_model(tmp_path / f"{name}.pt", good, state=s, card=card if s is None else None)
        text = _raises(load_model, path)
        assert "model card" not in text and path.name in text, text
        for w in words:
            assert w in text, (name, w, text)
        assert _cli(["segment", "--model", str(path), "-o", str(tmp_path / "seg"), str(SCAN)]).endswith(text[-40:])
        assert not (tmp_path / "seg").exists()


HUGE_CHILD = textwrap.dedent(r"""
    import json, resource, sys, torch
    torch.set_num_threads(1)
    sys.path[:0] = sys.argv[2:]
    from semisupseg import checkpoint
    from semisupseg.errors import InputError
    import test_untrusted_models as t

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tmp = __import__("pathlib").Path(sys.argv[1])
    good = torch.load(tmp / "good.pt", weights_only=True)
    card = json.loads(good["metadata"])
    state = dict(good["state_dict"])
    key = next(k for k, v in state.items() if v.ndim == 5)
    files = {
        "card n_filters 10**6": t.write_model(tmp / "nf.pt", good, card={**card, "network": {**card["network"],
                                                                                            "n_filters": 10**6}}),
        "card patch 10**5": t.write_model(tmp / "patch.pt", good, card={**card, "patch_size_xyz": [10**5] * 3}),
        "card in_channels 10**6": t.write_model(tmp / "inch.pt", good, card={**card, "in_channels": 10**6,
            "network": {**card["network"], "in_channels": 10**6}}),
    }
    fakes = t.fake_state(state)  # one tensor header claims 4 GB (10**9 floats) over a 16-byte record
    fakes[key] = t.FakeTensor(t.FakeStorage("huge", 10**9, b"\0" * 16), (10**9,))
    files["tensor header 4 GB"] = t.write_torch_zip(tmp / "header.pt", {checkpoint.FORMAT_KEY: 1,
        "metadata": good["metadata"], "state_dict": fakes})
    fakes = t.fake_state(state)  # storage claims 4 GB, the tensor a consistent 5-D shape
    fakes[key] = t.FakeTensor(t.FakeStorage("huge", 10**9, b"\0" * 16), (1000, 1000, 10, 10, 10))
    files["tensor storage 4 GB"] = t.write_torch_zip(tmp / "storage.pt", {checkpoint.FORMAT_KEY: 1,
        "metadata": good["metadata"], "state_dict": fakes})
    files["zip bomb 300 MB card"] = t.write_zip_bomb(tmp / "bomb.pt", 3 * 10**8)
    base = peak_mb()
    results = {}
    for name, path in files.items():
        errors = []
        for fn in (checkpoint.load_model, checkpoint.read_model_file):
            try:
                fn(path)
                errors.append(None)
            except InputError as exc:
                errors.append(str(exc))
        results[name] = errors
    # without the card limits, the meta-device build still allocates nothing for a 10**6-filter network
    checkpoint.CARD_LIMITS["n_filters"] = 10**9
    try:
        checkpoint.load_model(files["card n_filters 10**6"])
        results["n_filters 10**6, limit lifted"] = [None]
    except InputError as exc:
        results["n_filters 10**6, limit lifted"] = [str(exc)]
    print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "results": results}))
""")


def test_huge_declared_sizes_do_not_allocate(good_file, tmp_path):
    """In a child process (its own peak RSS): cards declaring 10^6 filters / channels or a 10^5 patch, tensor
    headers claiming 4 GB over a 16-byte record, a zip bomb (0.3 MB unpacking to a 300 MB card). All refused;
    the peak RSS grows by less than 150 MB (a 10^6-filter V-Net would need terabytes, the 4 GB tensor 4 GB, the
    bomb 300 MB)."""
    shutil.copy(good_file, tmp_path / "good.pt")
    here = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-c", HUGE_CHILD, str(tmp_path), str(here), str(here.parent), str(REPO / "src")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    res = report["results"]
    assert "n_filters must be an integer 1-512" in res["card n_filters 10**6"][0]
    assert "patch_size_xyz" in res["card patch 10**5"][0] and "too large" in res["card patch 10**5"][0]
    assert "in_channels must be 1-64" in res["card in_channels 10**6"][0]
    assert all(e is not None for e in res["tensor header 4 GB"]), res
    assert res["tensor storage 4 GB"][0] is not None  # load_model reads the data: the record is too short
    assert all("zip bomb" in e for e in res["zip bomb 300 MB card"]), res
    # read_model_file maps the storage (never reads it); the card is fine, the claimed size never allocated
    assert "shape mismatch" in res["n_filters 10**6, limit lifted"][0]
    assert report["peak_mb"] - report["base_mb"] < 150, report


# ----------------------------------------------------------------------------------------------------------------------
# The catalogue's registry (models.json: hand-edited or damaged)
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"format": ' + "9" * 5000 + ', "models": []}', "cannot be read"),
    ("\xff\xfe not text", "cannot be read"),
    ('{"format": 99, "models": []}', "format 99"),
    ('{"format": 1, "models": {"a": 1}}', "not a {'format': 1"),
    ('{"format": 1, "models": [{"name": "x", "source": "shipped", "path": "/x.pt"}]}', "malformed"),
    ('{"format": 1, "models": [{"name": 5, "source": "user", "path": "/x.pt"}]}', "malformed"),
])
def test_a_damaged_registry_is_one_clear_error(text, words, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "models.json").write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    catalogue = ModelCatalogue(home, shipped_dir=tmp_path / "none")
    for call in (catalogue.entries, lambda: catalogue.resolve("something"), lambda: catalogue.add(SCAN)):
        message = _raises(call)
        assert "models.json" in message and words in message or call is not catalogue.entries, message
    assert words in _cli(["models", "--home", str(home)])


def test_registry_entries_pointing_somewhere_odd_are_listed_with_their_error(good, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    hostile = write_container("zip-in-state-dict", code_payloads(marker)["builtins.exec"], good, tmp_path / "h.pt")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a model\n")
    records = [{"name": "relative", "source": "user", "path": "models/x.pt"},
               {"name": "relative-run", "source": "run", "run_dir": "runs/r"},
               {"name": "text", "source": "user", "path": str(text_file)},
               {"name": "folder", "source": "user", "path": str(tmp_path)},
               {"name": "hostile", "source": "user", "path": str(hostile)},
               {"name": "not-a-run", "source": "run", "run_dir": str(text_file)}]
    home = tmp_path / "home"
    home.mkdir()
    (home / "models.json").write_text(json.dumps({"format": 1, "models": records}))
    catalogue = ModelCatalogue(home, shipped_dir=tmp_path / "none")
    entries = {e.name: e for e in catalogue.entries()}
    assert set(entries) == {r["name"] for r in records} and all(e.error and e.card is None for e in entries.values())
    assert "relative path" in entries["relative"].error and "relative path" in entries["relative-run"].error
    assert "not a PyTorch checkpoint" in entries["text"].error and "nothing was executed" in entries["hostile"].error
    for name in ("relative", "relative-run", "folder", "not-a-run"):  # resolve checks existence only ...
        assert "cannot be used" in _raises(catalogue.resolve, name)
    for name in ("text", "hostile"):  # ... the loader refuses what is not a model file
        path = catalogue.resolve(name)
        assert path.name in _raises(load_model, path)
        monkeypatch.setenv("SEMISUPSEG_HOME", str(home))
        assert path.name in _cli(["segment", "--model", name, "-o", str(tmp_path / "seg"), str(SCAN)])
    assert not marker.exists() and not (tmp_path / "seg").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Other files that could carry code: a training config, the worker's raw arrays
# ----------------------------------------------------------------------------------------------------------------------

def test_a_config_with_python_tags_and_a_pickled_npy_never_run_code(tmp_path):
    """``train --config`` parses YAML safely (Python tags are an error), the worker reads ``.npy`` inputs without
    pickles; the controls show the same files run code with an unsafe loader."""
    import numpy as np
    import yaml

    marker = tmp_path / "PWNED"
    config = tmp_path / "evil.yaml"
    config.write_text(f"method: !!python/object/apply:os.system ['touch {marker}']\niterations: 5\n")
    text = _cli(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--print-config"])
    assert "evil.yaml" in text and "cannot parse config" in text and not marker.exists()
    assert not (tmp_path / "run").exists()
    yaml.unsafe_load(config.read_text())  # control
    assert marker.exists()
    marker.unlink()

    array = tmp_path / "scan.npy"
    np.save(array, np.array([Reduce(os.system, (f"touch '{marker}'",))], dtype=object), allow_pickle=True)
    geometry = {"spacing": [1, 1, 1], "origin": [0, 0, 0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    error = _worker({"op": "segment", "id": 1, "input": str(array), "geometry": geometry, "model": "hippocampus",
                     "output_dir": str(tmp_path / "out")})
    assert "scan.npy" in error and "allow_pickle" in error and not marker.exists()
    np.load(array, allow_pickle=True)  # control
    assert marker.exists()
