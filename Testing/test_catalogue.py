"""The model catalogue: shipped, user and run models; names and paths resolve; missing files are listed, not fatal;
names never shadow shipped models; ``semisupseg models`` and ``segment --model NAME`` on a real bundled scan."""
from __future__ import annotations

import json
import re
import os
from pathlib import Path

import numpy as np
import pytest

from semisupseg.catalogue import CatalogueError, ModelCatalogue, default_home, resolve_model
from semisupseg.cli import main
from semisupseg.errors import CheckpointError, InputError
from semisupseg.inference import SegmentOptions, segment
from semisupseg.io import read_image, read_volume

from helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]
LA_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "la" / "imagesTr" / "06SR5RBREL16DQ6M8LWS.nii.gz"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty catalogue home (also the default through SEMISUPSEG_HOME, as the CLI sees it)."""
    h = tmp_path / "home"
    monkeypatch.setenv("SEMISUPSEG_HOME", str(h))
    return h


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped-models folder with one model, ``left-atrium``, used by the catalogue and the CLI."""
    folder = tmp_path / "shipped"
    tiny_model(folder / "left-atrium.pt", seed=1, method="sassnet")
    monkeypatch.setattr("semisupseg.catalogue.SHIPPED_DIR", folder)
    return folder


def test_home_from_environment(home, monkeypatch):
    assert default_home() == home
    assert ModelCatalogue().registry_path == home.resolve() / "models.json"
    monkeypatch.delenv("SEMISUPSEG_HOME")
    assert default_home() == Path.home() / ".semisupseg"


def test_three_sources_listed_with_cards(tmp_path, home, shipped):
    user_file = tiny_model(tmp_path / "files" / "my model.pt", seed=2, method="uamt",
                           classes=("background", "anterior", "posterior"), spacing=(1.0, 1.0, 1.0))
    run_dir = tmp_path / "runs" / "la_sgrs"
    tiny_model(run_dir / "last.pt", seed=3, method="sgrs")
    cat = ModelCatalogue()
    assert not home.exists()  # nothing is created by reading
    assert [(e.name, e.source) for e in cat.entries()] == [("left-atrium", "shipped")]
    user = cat.add(user_file)
    assert user.name == "my-model" and user.source == "user" and user.path == user_file.resolve()
    run = cat.register_run(run_dir)
    assert run.name == "la_sgrs" and run.path == (run_dir / "last.pt").resolve() and run.error is None
    entries = cat.entries()
    assert [(e.name, e.source, e.method) for e in entries] == [
        ("left-atrium", "shipped", "sassnet"), ("my-model", "user", "uamt"), ("la_sgrs", "run", "sgrs")]
    assert entries[1].classes == ["anterior", "posterior"] and entries[1].spacing_xyz == (1.0, 1.0, 1.0)
    # the registry is JSON with absolute paths
    data = json.loads((home / "models.json").read_text())
    assert data["format"] == 1
    assert [Path(r.get("path") or r.get("run_dir")).is_absolute() for r in data["models"]] == [True, True]
    # a run entry follows the run: best.pt is preferred as soon as it exists
    tiny_model(run_dir / "best.pt", seed=4, method="sgrs")
    assert cat.get("la_sgrs").path == (run_dir / "best.pt").resolve()
    # another catalogue object (another process) sees the same entries
    assert [e.name for e in ModelCatalogue(home).entries(read_cards=False)] == ["left-atrium", "my-model", "la_sgrs"]


def test_resolve_name_or_path(tmp_path, home, shipped):
    cat = ModelCatalogue()
    f = tiny_model(tmp_path / "m.pt")
    cat.add(f, name="mine")
    assert cat.resolve("mine") == f.resolve()
    assert cat.resolve("left-atrium") == (shipped / "left-atrium.pt").resolve()
    assert cat.resolve(str(f)) == f.resolve()
    assert resolve_model("mine") == f.resolve()  # the CLI's entry point, default home from the environment
    with pytest.raises(CatalogueError, match="neither a model name.*known: left-atrium, mine"):
        cat.resolve("nosuch")
    with pytest.raises(InputError, match="model file not found"):
        cat.resolve(str(tmp_path / "nosuch.pt"))
    with pytest.raises(InputError, match="holds no best.pt or last.pt"):  # a folder, but no training run's
        cat.resolve(str(tmp_path))


def test_resolve_a_training_run_folder(tmp_path, home, shipped, capsys):
    """``-m runs/myrun`` is the run's best.pt, else its last.pt (the rule of registered runs); a folder holding
    neither is one line saying so, for segment, info and rank alike."""
    cat = ModelCatalogue()
    run = tmp_path / "runs" / "myrun"
    last = tiny_model(run / "last.pt", seed=3, method="uamt")
    (run / "config.yaml").write_text("method: uamt\n")
    assert cat.resolve(str(run)) == last.resolve() == resolve_model(run)
    best = tiny_model(run / "best.pt", seed=4, method="sgrs")
    assert cat.resolve(str(run)) == best.resolve()
    assert cat.resolve(str(run) + "/") == best.resolve()
    # a folder given relative to the working folder, and one named like a catalogue name
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert cat.resolve("runs/myrun") == best.resolve()
        os.chdir(tmp_path / "runs")
        assert cat.resolve("myrun") == best.resolve()
    finally:
        os.chdir(cwd)
    # the CLI commands that take -m/MODEL
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert str(best.resolve()) in out and "sgrs" in out
    empty = tmp_path / "runs" / "started"
    empty.mkdir()
    (empty / "events.jsonl").write_text("")
    with pytest.raises(InputError) as ei:
        cat.resolve(str(empty))
    assert str(ei.value) == (f"{empty}: holds no best.pt or last.pt: is it a training run that has saved a "
                             "model yet?")
    for argv in (["info", str(empty)],
                 ["segment", str(LA_SAMPLE), "--model", str(empty), "-o", str(tmp_path / "seg")],
                 ["rank", "--model", str(empty), str(LA_SAMPLE), "-o", str(tmp_path / "r.csv")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {empty}: holds no best.pt or last.pt: is it a training run that has saved a model "
                       "yet?"], argv
    assert not (tmp_path / "seg").exists() and not (tmp_path / "r.csv").exists()
    # segment with the run folder gives what its best.pt gives
    by_run, by_file = tmp_path / "by_run", tmp_path / "by_file"
    assert main(["segment", str(LA_SAMPLE), "--model", str(run), "-o", str(by_run)]) == 0
    assert main(["segment", str(LA_SAMPLE), "--model", str(best), "-o", str(by_file)]) == 0
    case = "06SR5RBREL16DQ6M8LWS"
    assert np.array_equal(read_volume(by_run / f"{case}_label.nii.gz").array,
                          read_volume(by_file / f"{case}_label.nii.gz").array)


def test_missing_file_listed_not_fatal(tmp_path, home, shipped, capsys):
    cat = ModelCatalogue()
    f = tiny_model(tmp_path / "gone.pt")
    cat.add(f)
    run_dir = tmp_path / "empty_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("method: supervised\n")  # a run that started, no model file yet
    cat.register_run(run_dir)
    f.unlink()
    entries = {e.name: e for e in cat.entries()}
    assert entries["gone"].card is None and "model file not found" in entries["gone"].error
    assert "no model file yet" in entries["empty_run"].error
    assert entries["left-atrium"].error is None
    with pytest.raises(CatalogueError, match=r"'gone' \(user\) cannot be used: model file not found"):
        cat.resolve("gone")
    # the CLI lists it with the reason and still exits 0
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gone" in out and "unusable: model file not found" in out and "left-atrium" in out
    # a file that is not a model is reported too
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    registry = json.loads((home / "models.json").read_text())
    registry["models"].append({"name": "junk", "source": "user", "path": str(tmp_path / "junk.pt")})
    (home / "models.json").write_text(json.dumps(registry))
    junk = {e.name: e for e in cat.entries()}["junk"]
    assert junk.card is None and "junk.pt" in junk.error


def test_name_clashes_and_validation(tmp_path, home, shipped):
    cat = ModelCatalogue()
    f1 = tiny_model(tmp_path / "a" / "left-atrium.pt")
    f2 = tiny_model(tmp_path / "b" / "model.pt", seed=5)
    with pytest.raises(CatalogueError, match="belongs to a model shipped"):
        cat.add(f1, name="left-atrium")
    # without a name the file stem is used, made unique rather than shadowing the shipped one
    assert cat.add(f1).name == "left-atrium-2"
    cat.add(f2, name="mine")
    with pytest.raises(CatalogueError, match="already used by a user model"):
        cat.add(f1, name="mine")
    (tmp_path / "a" / "events.jsonl").write_text("")  # folder "a" is a training run too
    with pytest.raises(CatalogueError, match="already used by a user model"):
        cat.register_run(tmp_path / "a", name="mine")
    for bad in ("", "has space", "-dash", "x.pt", "a/b"):
        with pytest.raises(CatalogueError, match="invalid model name"):
            cat.add(f2, name=bad)
    # adding the same file again returns its entry, no duplicate
    assert cat.add(f2).name == "mine"
    assert [e.name for e in cat.entries()] == ["left-atrium", "left-atrium-2", "mine"]
    # not a model file / not found / a folder: refused, the registry unchanged
    (tmp_path / "notmodel.pt").write_bytes(b"\x80\x02junk")
    with pytest.raises(CheckpointError, match="notmodel.pt"):
        cat.add(tmp_path / "notmodel.pt")
    with pytest.raises(InputError, match="model file not found"):
        cat.add(tmp_path / "nope.pt")
    with pytest.raises(InputError, match="training run folder not found"):
        cat.register_run(tmp_path / "nope")
    assert len(json.loads((home / "models.json").read_text())["models"]) == 2


def test_shipped_model_added_later_shadows_user_entry(tmp_path, home, shipped):
    cat = ModelCatalogue()
    f = tiny_model(tmp_path / "hip.pt")
    cat.add(f, name="hippocampus")
    tiny_model(shipped / "hippocampus.pt", seed=6)  # a later release ships that name
    entries = [e for e in cat.entries() if e.name == "hippocampus"]
    assert [e.source for e in entries] == ["shipped", "user"]
    assert entries[0].error is None and "shadowed by the shipped model" in entries[1].error
    assert cat.resolve("hippocampus") == (shipped / "hippocampus.pt").resolve()


def test_remove(tmp_path, home, shipped):
    cat = ModelCatalogue()
    f = tiny_model(tmp_path / "m.pt")
    cat.add(f, name="mine")
    with pytest.raises(CatalogueError, match="shipped with semisupseg and cannot be removed"):
        cat.remove("left-atrium")
    with pytest.raises(CatalogueError, match="no user or run model named 'other'"):
        cat.remove("other")
    assert cat.remove("mine").path == f.resolve()
    assert f.exists()  # the file itself is kept
    assert [e.name for e in cat.entries()] == ["left-atrium"]


def test_corrupt_registry_is_named_not_overwritten(tmp_path, home, shipped):
    home.mkdir()
    (home / "models.json").write_text("{not json")
    cat = ModelCatalogue()
    with pytest.raises(CatalogueError, match="models.json: the model registry cannot be read"):
        cat.entries()
    with pytest.raises(CatalogueError, match="models.json"):
        cat.add(tiny_model(tmp_path / "m.pt"))
    assert (home / "models.json").read_text() == "{not json"
    # a path still resolves without reading the registry
    assert cat.resolve(str(tmp_path / "m.pt")) == (tmp_path / "m.pt").resolve()


def test_registry_written_atomically(tmp_path, home, shipped, monkeypatch):
    """A failure while writing leaves the previous registry intact and no temporary file behind."""
    cat = ModelCatalogue()
    cat.add(tiny_model(tmp_path / "m1.pt"), name="one")
    second = tiny_model(tmp_path / "m2.pt", seed=1)
    before = (home / "models.json").read_text()

    def failing_replace(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cat.add(second, name="two")
    monkeypatch.undo()
    assert (home / "models.json").read_text() == before
    assert sorted(p.name for p in home.iterdir()) == ["models.json", "models.json.lock"]


def test_cli_models_table_info_add_remove(tmp_path, home, shipped, capsys):
    f = tiny_model(tmp_path / "user.pt", method="uamt")
    run_dir = tmp_path / "run1"
    tiny_model(run_dir / "best.pt", method="sgrs")
    assert main(["models", "add", str(f), "--name", "mine"]) == 0
    assert main(["models", "register-run", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "METHOD", "CLASSES", "SPACING", "PATH"]
    assert [line.split()[0] for line in lines[1:]] == ["left-atrium", "mine", "run1"]
    # aligned: every column starts at the same offset in every line
    for col in ("SOURCE", "METHOD", "CLASSES", "SPACING", "PATH"):
        start = lines[0].index(col)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines[1:]), col
    assert "sassnet" in lines[1] and "left atrium" in lines[1] and "1.25x1.25x1.25 mm" in lines[1]
    assert str(f.resolve()) in lines[2] and "uamt" in lines[2]
    assert str((run_dir / "best.pt").resolve()) in lines[3] and " run " in lines[3]
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == ["left-atrium", "mine", "run1"] and listed[1]["card"]["method"] == "uamt"
    assert main(["models", "info", "mine"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^source: +user$", out, re.M) and re.search(r"^method: +uamt$", out, re.M)
    # the catalogue's rows and the card's share one value column
    top = [ln for ln in out.splitlines() if not ln.startswith(" ") and ":" in ln and not ln.endswith(":")]
    assert len({len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in top}) == 1, top
    assert main(["info", "mine"]) == 0  # 'info' takes a name too
    assert "uamt" in capsys.readouterr().out
    assert main(["models", "add", str(f), "--name", "left-atrium"]) == 2
    assert "belongs to a model shipped" in capsys.readouterr().err
    assert main(["models", "remove", "mine"]) == 0
    assert main(["models", "info", "mine"]) == 2
    assert "no model named 'mine'" in capsys.readouterr().err


def test_register_run_refuses_a_folder_that_is_no_training_run(tmp_path, home, shipped, capsys):
    """A folder without config.yaml, events.jsonl or a model file: one error line naming it, exit 2, nothing added.
    A run that has started (events.jsonl only) is accepted and says it has no model yet."""
    not_run = tmp_path / "holiday photos"
    not_run.mkdir()
    (not_run / "notes.txt").write_text("x")
    assert main(["models", "register-run", str(not_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {not_run}: is not a training run folder (none of config.yaml, events.jsonl, best.pt, "
                   "last.pt); nothing was registered"]
    assert not (home / "models.json").exists()
    with pytest.raises(InputError, match="is not a training run folder"):
        ModelCatalogue().register_run(not_run, name="photos")
    assert [e.name for e in ModelCatalogue().entries(read_cards=False)] == ["left-atrium"]
    started = tmp_path / "started"
    started.mkdir()
    (started / "events.jsonl").write_text("")
    assert main(["models", "register-run", str(started)]) == 0
    assert "no model file yet" in capsys.readouterr().out
    assert [e.name for e in ModelCatalogue().entries(read_cards=False)] == ["left-atrium", "started"]


def test_segment_with_catalogue_name_on_real_scan(tmp_path, home, shipped, capsys):
    """``segment --model NAME`` gives exactly what the same model gives by path (and in-process)."""
    f = tiny_model(tmp_path / "la.pt", seed=7)
    assert main(["models", "add", str(f), "--name", "la-test"]) == 0
    by_name, by_path = tmp_path / "by_name", tmp_path / "by_path"
    assert main(["segment", str(LA_SAMPLE), "--model", "la-test", "-o", str(by_name), "--json-progress"]) == 0
    assert main(["segment", str(LA_SAMPLE), "--model", str(f), "-o", str(by_path), "--json-progress"]) == 0
    case = "06SR5RBREL16DQ6M8LWS"
    a = read_volume(by_name / f"{case}_label.nii.gz")
    b = read_volume(by_path / f"{case}_label.nii.gz")
    image = read_image(LA_SAMPLE)
    assert a.same_geometry(image) and np.array_equal(a.array, b.array)
    expected = segment(image, f, options=SegmentOptions(compute_sdm=False, compute_entropy=False)).labels.array
    assert np.array_equal(a.array, expected)
    # a shipped name works the same way; an unknown name is one clear line
    assert main(["segment", str(LA_SAMPLE), "--model", "left-atrium", "-o", str(tmp_path / "shipped")]) == 0
    assert main(["segment", str(LA_SAMPLE), "--model", "nosuch", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 'nosuch' is neither a model name") and "la-test" in err
    assert not (tmp_path / "x").exists()


def test_registry_lock_serialises_writers(tmp_path, home, shipped):
    """A second process adding a model waits while the registry is locked, then adds on top of what the first
    wrote (nothing lost)."""
    import subprocess
    import sys
    import time

    cat = ModelCatalogue()
    f1, f2 = tiny_model(tmp_path / "first.pt"), tiny_model(tmp_path / "second.pt", seed=1)
    code = ("import sys; from semisupseg.catalogue import ModelCatalogue; import semisupseg.checkpoint\n"
            "print('ready', flush=True); ModelCatalogue().add(sys.argv[1])\n")
    with cat._locked():
        proc = subprocess.Popen([sys.executable, "-c", code, str(f2)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # an add takes milliseconds: the child is blocked on the lock
            assert proc.poll() is None and not (home / "models.json").exists()
            # what the lock holder writes is kept by the waiting writer
            records = [{"name": "first", "source": "user", "path": str(f1.resolve())}]
            cat._write_registry(records)
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(timeout=60) == 0
    assert [e.name for e in cat.entries(read_cards=False)] == ["left-atrium", "first", "second"]


def test_a_catalogue_home_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    """--home naming a file (not a folder): one line saying so, exit 2, the file untouched."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    model = Path(__file__).resolve().parents[1] / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"
    assert main(["models", "--home", str(afile), "add", str(model), "--name", "t"]) == 2
    err = capsys.readouterr().err
    assert "the catalogue home is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert afile.read_text() == "mine"


def test_models_says_what_each_shipped_model_was_trained_on(capsys):
    """A newcomer choosing a model sees, under the table, the anatomy's data and size each was trained on (from
    its card), not only its classes and voxel size; a card that says nothing gives no line."""
    from semisupseg.catalogue import resolve_model
    from semisupseg.cli.models import model_purpose

    hip = model_purpose(resolve_model("hippocampus"))
    assert hip.startswith("MRI scans of about 35 x 50 x 36 mm (median of 140 training scans); Task04_Hippocampus")
    assert "left atrium" in model_purpose(resolve_model("left-atrium"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "what each model was trained on" in out and f"  hippocampus: {hip}" in out


def test_a_card_without_training_data_gives_no_purpose(tmp_path):
    from semisupseg.cli.models import model_purpose

    assert model_purpose(tiny_model(tmp_path / "bare.pt")) == ""
    assert model_purpose(tmp_path / "missing.pt") == ""


def test_registry_writes_are_locked_on_windows_too(tmp_path, monkeypatch):
    """Windows has no fcntl: the registry's read-modify-write went unlocked there, so the Slicer module and the
    command line adding models at once could lose one. It now takes msvcrt's lock (simulated here: the calls, in
    order, around the write)."""
    import sys
    import types

    from semisupseg.catalogue import ModelCatalogue

    calls = []
    fake = types.SimpleNamespace(LK_LOCK=1, LK_UNLCK=0,
                                 locking=lambda fd, mode, n: calls.append(("lock" if mode == 1 else "unlock", n)))
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    cat = ModelCatalogue(tmp_path / "home")
    cat.add(tiny_model(tmp_path / "m.pt"), name="mine")
    assert calls == [("lock", 1), ("unlock", 1)]
    assert [e.name for e in cat.entries() if e.source == "user"] == ["mine"]
