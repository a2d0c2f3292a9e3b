"""The training panel's logic (``SemiSupSegLib.training_logic``) with real ``semisupseg train`` children on the
bundled hippocampus scans (patch 16^3, V-Net width 4, one thread): the argument list the CLI reads back, start with
events flowing from the run folder, cancel (the process tree gone, ``resume.pt`` intact), resume to the end, the
plots and overlays of the run in a real MRML scene, "Use in SemiSupSeg" through the shared catalogue, re-attaching
to a finished run and to a crashed one (a child SIGKILLed) from a session that does not own it, and the data check
(the same report as ``semisupseg check-data --json``)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from conftest import SAMPLE_DATA

HIPPO = SAMPLE_DATA / "hippocampus"
TINY = ("model.n_filters=4", "num_threads=1", "amp=off", "save_every=1")


def _settings(run_dir: Path, iterations: int, **kw):
    from SemiSupSegLib.training_logic import TrainingSettings

    base = dict(method="supervised", labeled=str(HIPPO), run_dir=str(run_dir), iterations=iterations,
                patch_size=(16, 16, 16), batch_size=2, labeled_batch_size=2, device="cpu",
                overrides=TINY + (f"val_every={iterations}",))
    base.update(kw)
    return TrainingSettings(**base)


def _wait_for(session, predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        session.poll()
        if predicate(session):
            return
        assert not (session.ended and session.runner is not None and not session.runner.running), \
            f"the run ended early: {session.status} {session.message}\n{session.log_text}"
        time.sleep(0.05)
    raise AssertionError(f"timed out; status {session.status}\n{session.log_text}")


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the child leads its own process group: nothing of its tree may be left
    except ProcessLookupError:
        return True
    return False


# ----------------------------------------------------------------------------------------------------------------------
# the command line the panel builds
# ----------------------------------------------------------------------------------------------------------------------

def test_train_arguments_mean_what_the_panel_says(tmp_path):
    """The argument list, parsed by the package's own CLI and applied as ``train`` applies it, gives a config with
    every setting of the panel (main settings, overlays, advanced method and engine settings)."""
    from semisupseg.cli import build_parser
    from semisupseg.cli.train import _explicit_overrides
    from semisupseg.training import TrainConfig, apply_overrides
    from SemiSupSegLib.training_logic import resume_arguments, stop_file, train_arguments

    s = _settings(tmp_path / "run", 250, method="sgrs", unlabeled=(str(tmp_path),), lr=2e-5, seed=7,
                  validation="hippocampus_023, hippocampus_025", overlay_cases=("hippocampus_015",), overlay_every=50,
                  overrides=TINY + ("method_params.label_smoothing=0.1", "method_params.rampup=\"sigmoid\"",
                                    "data.augment=\"dihedral\""))
    args = train_arguments(s)
    assert args[0] == "train" and args[-3:] == ["--stop-file", str(stop_file(tmp_path / "run")), "--no-bar"]
    assert "--events" not in args  # the run must outlive the pipe to Slicer
    ns = build_parser().parse_args(args)
    cfg = TrainConfig()
    apply_overrides(cfg, _explicit_overrides(ns))
    apply_overrides(cfg, ns.overrides)
    assert (cfg.method, cfg.iterations, cfg.batch_size, cfg.labeled_batch_size, cfg.seed, cfg.device) == \
        ("sgrs", 250, 2, 2, 7, "cpu")
    assert cfg.data.patch_size == [16, 16, 16] and cfg.data.labeled == str(HIPPO)
    assert cfg.data.unlabeled == [str(tmp_path)]
    assert cfg.data.validation == ["hippocampus_023", "hippocampus_025"]
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.overlays.cases == ["hippocampus_015"] and cfg.overlays.every == 50
    assert cfg.method_params == {"label_smoothing": 0.1, "rampup": "sigmoid"}
    assert cfg.data.augment == "dihedral" and cfg.model.n_filters == 4 and cfg.num_threads == 1
    assert ns.stop_file == str(tmp_path / "run" / ".stop") and ns.out == str(tmp_path / "run")
    resumed = build_parser().parse_args(resume_arguments(tmp_path / "run", iterations=300))
    assert resumed.resume == str(tmp_path / "run") and resumed.iterations == 300


def test_start_refuses_what_train_would_refuse_before_starting_anything(tmp_path):
    from semisupseg.errors import InputError
    from SemiSupSegLib.training_logic import TrainingLogic

    logic = TrainingLogic()
    with pytest.raises(InputError, match="unknown method 'nope'"):
        logic.start(_settings(tmp_path / "run", 2, method="nope"))
    with pytest.raises(InputError, match="folder not found"):
        logic.start(_settings(tmp_path / "run", 2, labeled=str(tmp_path / "missing")))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    with pytest.raises(InputError, match="not empty and holds no run"):
        logic.start(_settings(tmp_path / "mine", 2))
    with pytest.raises(InputError, match="nothing to resume"):
        logic.resume(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my notes"
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------------------------------
# a real run: start, events, cancel, resume, plots and overlays, use in SemiSupSeg, re-attach
# ----------------------------------------------------------------------------------------------------------------------

def test_start_cancel_resume_view_and_use_in_segment(headless, tmp_path, monkeypatch):
    import torch

    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.training.heartbeat import read_heartbeat
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import RunView, TrainingLogic, TrainingSession

    monkeypatch.setenv("SEMISUPSEG_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    logic = TrainingLogic()
    lines = []
    session = logic.start(_settings(run, 400, overlay_cases=("hippocampus_015",), overlay_every=1000),
                          on_log=lines.append)
    assert session.owned and session.status == "starting"
    assert logic.attach(run) is session  # reopening the panel finds the session with its process

    # events flow from the run folder while it trains
    _wait_for(session, lambda s: s.status == "running" and (s.iteration or 0) >= 3)
    assert session.max_iterations == 400 and 0 < session.progress < 1 and session.lr == pytest.approx(0.01)
    assert [e["event"] for e in session.events][:2] == ["started", "iteration"]
    pid = session.runner.pid

    # a second start in the live folder is refused, by this panel and by the heartbeat
    from semisupseg.errors import InputError

    with pytest.raises(InputError, match="still running"):
        logic.resume(run)
    # cancel: the stop file; the engine saves its state and exits; nothing of the process tree is left
    session.cancel(grace_s=60.0, block=True, timeout=120)
    assert session.status == "cancelled" and session.returncode == 130, session.log_text
    assert _gone(pid)
    stopped_at = session.iteration
    assert 3 <= stopped_at < 400
    state = torch.load(run / "resume.pt", map_location="cpu", weights_only=True)  # intact, loadable
    assert int(state["iteration"]) == stopped_at
    assert read_heartbeat(run)["status"] == "cancelled" and not (run / ".stop").exists()

    # resume to the end (a new, smaller total: stop 2 iterations later)
    resumed = logic.resume(run, iterations=stopped_at + 2, on_log=lines.append)
    assert resumed.wait(timeout=180) == "finished", resumed.log_text
    assert resumed.returncode == 0 and resumed.iteration == stopped_at + 2 and resumed.progress == 1.0
    kinds = [e["event"] for e in resumed.events]
    assert kinds.count("started") == 1 and kinds.count("cancelled") == 1 and kinds.count("resumed") == 1
    assert kinds[-1] == "finished" and "overlays" in kinds
    assert any("finished" in line for line in lines)  # the child's own lines reached the panel's log

    # the run in the scene: one row per iteration (the resumed run's rows replace nothing), validation at the end,
    # the overlay set of the case in the run's subject-hierarchy folder
    view = RunView(headless.scene, resumed)
    iterations = view.plots.column("losses", "iteration")
    assert list(iterations) == list(range(1, stopped_at + 3))
    assert len(view.plots.column("validation", "dice")) == 1
    assert view.charts["loss"].GetNumberOfPlotSeriesNodes() >= 1
    assert view.charts["dice"].GetNumberOfPlotSeriesNodes() == 1
    manifest = view.overlays.loaded["hippocampus_015"]
    assert manifest["iteration"] == stopped_at + 2
    kinds = {f["kind"] for f in manifest["files"]}
    assert {"segmentation", "sdm", "entropy", "gt_sdm", "ring"} <= kinds
    shown = [n for n in view.overlays.nodes.values()]
    assert len(shown) == len(manifest["files"]) and all(n.GetImageData() is not None for n in shown)
    sh = headless.scene.GetSubjectHierarchyNode()
    parents = {sh.GetItemParent(sh.GetItemByDataNode(n)) for n in shown}
    assert len(parents) == 1 and "hippocampus_015 overlays" in sh.GetItemName(parents.pop())

    # Use in SemiSupSeg: the run's best model joins the catalogue the SemiSupSeg module and the CLI read
    name = logic.use_in_segment(run)
    assert name == "run"
    entry = next(e for e in ModelCatalogue().entries() if e.name == name)
    assert entry.source == "run" and entry.path == (run / "best.pt").resolve() and entry.card.method == "supervised"
    assert logic.use_in_segment(run) == name  # registering again gives the same entry

    # another session (nothing owned) re-attaches to the finished run from its folder alone
    monkeypatch.setattr(training_logic, "_OWNED", {})
    follower = TrainingLogic().attach(run)
    assert isinstance(follower, TrainingSession) and not follower.owned
    follower.poll()
    assert follower.status == "finished" and follower.iteration == stopped_at + 2 and follower.progress == 1.0
    assert follower.eta_s is None
    assert [e["event"] for e in follower.events] == [e["event"] for e in resumed.events]


def test_a_killed_child_is_crashed_for_its_owner_and_for_a_follower(tmp_path, monkeypatch):
    """SIGKILL of a real training child: a follower (a session that does not own it) sees it running from the run
    folder, then crashed; its owner reports crashed; the run's state stays resumable."""
    from semisupseg.training.heartbeat import run_status
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingSession

    run = tmp_path / "run"
    logic = TrainingLogic()
    owner = logic.start(_settings(run, 2000))
    _wait_for(owner, lambda s: (s.iteration or 0) >= 2)
    follower = TrainingSession(run)
    assert not follower.owned and follower.status == "running"
    _wait_for(follower, lambda s: len(s.events) >= 3)
    os.kill(owner.runner.pid, signal.SIGKILL)
    assert owner.wait(timeout=60) == "crashed" and "signal 9" in owner.message
    assert _gone(owner.runner.pid)
    follower.poll()
    end = time.monotonic() + 10
    while follower.status != "crashed" and time.monotonic() < end:
        time.sleep(0.1)
        follower.poll()
    assert follower.status == "crashed" and run_status(run) == "crashed"
    assert follower.eta_s is None and follower.iteration >= 2
    # the crashed run can be continued (its saved state), it is not "running" any more
    assert (run / "resume.pt").is_file() and (run / "config.yaml").is_file()
    monkeypatch.setattr(training_logic, "_OWNED", {})
    assert TrainingLogic().attach(run).status == "crashed"


# ----------------------------------------------------------------------------------------------------------------------
# data check
# ----------------------------------------------------------------------------------------------------------------------

def test_data_check_is_the_report_of_check_data(tmp_path):
    from semisupseg.cli import main
    from SemiSupSegLib.training_logic import TrainingLogic

    logic = TrainingLogic()
    settings = _settings(tmp_path / "run", 10, method="mean-teacher", validation=1)
    job = logic.check_data(settings)
    report = job.wait(timeout=120)
    out = io.StringIO()
    with redirect_stdout(out):
        main(["check-data", "--method", "mean-teacher", "--labeled", str(HIPPO), "--validation", "1", "--json"])
    assert report.to_dict() == json.loads(out.getvalue())
    assert report.usable and job.fraction == 1.0
    assert job.lines()[-1] == "the data can be used for training"

    # a broken set: a label without its image and an image without its label, each named; no exception
    broken = tmp_path / "broken"
    shutil.copytree(HIPPO, broken)
    (broken / "imagesTr" / "hippocampus_011.nii.gz").unlink()
    (broken / "labelsTr" / "hippocampus_017.nii.gz").unlink()
    job = logic.check_data(_settings(tmp_path / "run", 10, labeled=str(broken)))
    text = "\n".join(job.wait(timeout=120) and job.lines())
    assert "hippocampus_011" in text and "hippocampus_017" in text and "error(s): training would not start" in text
    assert not job.report.usable
