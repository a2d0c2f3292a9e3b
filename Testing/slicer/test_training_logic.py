"""The training panel's logic (``SemiSupSegLib.training_logic``) with real ``semisupseg train`` children on the
bundled hippocampus scans (patch 16^3, V-Net width 4, one thread): the argument list the CLI reads back, start with
events flowing from the run folder, cancel (the process tree gone, ``resume.pt`` intact), resume to the end, the
plots and overlays of the run in a real MRML scene (drawn again after the scene is closed mid-run), "Use in SemiSupSeg" through the shared catalogue, re-attaching
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

import numpy as np
import pytest

from slicer_guard import SAMPLE_DATA

HIPPO = SAMPLE_DATA / "hippocampus"
TINY = ("model.n_filters=4", "num_threads=1", "amp=off", "save_every=1")
#: the small hippocampus model the SemiSupSeg module's tests use (ranking needs a model that segments something)
RANK_MODEL = SAMPLE_DATA.parents[2] / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"


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
    from semisupseg.cli.train import explicit_overrides
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
    apply_overrides(cfg, explicit_overrides(ns))
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


def test_panel_texts_become_settings_or_one_clear_line(tmp_path):
    from semisupseg.errors import InputError
    from SemiSupSegLib.training_logic import settings_from_panel, train_arguments

    texts = {"method": "sgrs", "labeled": str(HIPPO), "run_dir": str(tmp_path / "run"), "labels": "",
             "unlabeled": f"{tmp_path}; {tmp_path / 'more'}", "iterations": 600, "patch_size": "96, 96 80",
             "batch_size": "4", "labeled_batch_size": 2, "lr": "1e-3", "validation": "hippocampus_023,",
             "seed": "", "device": "cpu", "overlay_cases": "hippocampus_015", "overlay_every": "50"}
    s = settings_from_panel(texts, overrides=["method_params.tau=0.3"])
    assert (s.method, s.iterations, s.patch_size, s.batch_size, s.labeled_batch_size, s.lr) == \
        ("sgrs", 600, (96, 96, 80), 4, 2, 1e-3)
    assert s.unlabeled == (str(tmp_path), str(tmp_path / "more")) and s.labels is None and s.seed is None
    assert s.validation == "hippocampus_023" and s.overlay_cases == ("hippocampus_015",) and s.overlay_every == 50
    assert "--seed" not in train_arguments(s) and ["--set", "method_params.tau=0.3"] == train_arguments(s)[-5:-3]
    assert settings_from_panel({**texts, "validation": "0", "patch_size": ""}).validation == 0
    for change, message in (({"iterations": "ten"}, "iterations: 'ten' is not a whole number"),
                            ({"iterations": "0"}, "iterations: must be at least 1"),
                            ({"patch_size": "96 96"}, "patch size: '96 96' is not three sizes"),
                            ({"labeled_batch_size": "8"}, r"labeled batch \(8\) cannot be larger than the batch \(4\)"),
                            ({"lr": "-1"}, "learning rate must be > 0"), ({"run_dir": " "}, "choose a run folder")):
        with pytest.raises(InputError, match=message):
            settings_from_panel({**texts, **change})


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

@pytest.mark.slow
def test_start_cancel_resume_view_and_use_in_segment(headless, tmp_path, monkeypatch):
    import torch

    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.training.heartbeat import read_heartbeat
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import (RunView, TrainingLogic, TrainingPanel, TrainingSession,
                                              run_model_classes, status_line)

    monkeypatch.setenv("SEMISUPSEG_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    logic = TrainingLogic()
    # Annotate next runs a 'semisupseg rank' child; started first, it runs beside the training children
    scans = tmp_path / "unlabeled"
    scans.mkdir()
    for case in ("hippocampus_017", "hippocampus_023"):
        shutil.copy(HIPPO / "imagesTr" / f"{case}.nii.gz", scans)
    ranking = logic.rank(str(RANK_MODEL), [scans])
    lines = []
    session = logic.start(_settings(run, 400, overlay_cases=("hippocampus_015",), overlay_every=1000),
                          on_log=lines.append)
    assert session.owned and session.status == "starting"
    assert logic.attach(run) is session  # reopening the panel finds the session with its process

    # events flow from the run folder while it trains
    _wait_for(session, lambda s: s.status == "running" and (s.iteration or 0) >= 3)
    assert session.max_iterations == 400 and 0 < session.progress < 1 and session.lr == pytest.approx(0.01)
    assert status_line(session).startswith("running, iteration ") and "/400" in status_line(session)
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
    assert status_line(session) == f"cancelled at iteration {stopped_at}/400: Resume continues from the saved state"

    # resume to the end (a new, smaller total: stop 2 iterations later)
    resumed = logic.resume(run, iterations=stopped_at + 2, on_log=lines.append)
    panel = TrainingPanel(logic, headless.scene)
    assert panel.follow_folder(run) is resumed  # the panel's timer from here: poll, draw what is new
    updates, end, closed_at = [], time.monotonic() + 180, None
    while not updates or updates[-1].running or resumed.runner.running:
        assert time.monotonic() < end, resumed.log_text
        updates.append(panel.tick())
        if closed_at is None and len(updates) == 3:  # the user closes the scene: the run goes on, and is redrawn
            headless.clear()
            panel.scene_closed()
            closed_at = len(updates)
        time.sleep(0.05)
    assert resumed.status == "finished", resumed.log_text
    # chart nodes made at the start and again once after the scene was closed, the same nodes otherwise
    assert [i for i, u in enumerate(updates) if u.chart_changed] == [0, closed_at]
    assert headless.scene.GetNodeByID(panel.chart("loss").GetID()) is panel.chart("loss")
    assert updates[-1].percent == 100 and updates[-1].status.startswith("finished") and not updates[-1].running
    assert any(u.running for u in updates[:-1])
    view = panel.view
    assert panel.chart("loss") is view.charts["loss"]
    assert resumed.returncode == 0 and resumed.iteration == stopped_at + 2 and resumed.progress == 1.0
    kinds = [e["event"] for e in resumed.events]
    assert kinds.count("started") == 1 and kinds.count("cancelled") == 1 and kinds.count("resumed") == 1
    assert kinds[-1] == "finished" and "overlays" in kinds
    assert any("finished" in line for line in lines)  # the child's own lines reached the panel's log

    # the run in the scene: one row per iteration (the resumed run's rows replace nothing), validation at the end,
    # the overlay set of the case in the run's subject-hierarchy folder; drawn as it came, it is what re-attaching
    # to the finished run draws from the whole log (in another scene)
    from SemiSupSegLib.headless import build_headless_slicer

    other = build_headless_slicer()
    again = RunView(other.scene, logic.attach(run))
    for table in ("losses", "validation", "figures"):
        for column in ("iteration", "loss", "dice", "lr"):
            np.testing.assert_array_equal(view.plots.column(table, column), again.plots.column(table, column))
    assert again.overlays.loaded["hippocampus_015"] == view.overlays.loaded["hippocampus_015"]
    other.scene.Clear(1)
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
    assert run_model_classes(run) == (["background", "Anterior", "Posterior"], [0, 1, 2])
    assert status_line(resumed).startswith(f"finished at iteration {stopped_at + 2}/{stopped_at + 2}, best validation")

    # Annotate next (started at the top, running beside the training): the scans ranked by the model's uncertainty
    rows = ranking.wait(timeout=180)
    assert sorted(r["case"] for r in rows) == ["hippocampus_017", "hippocampus_023"]
    assert [r["rank"] for r in rows] == ["1", "2"] and float(rows[0]["score"]) >= float(rows[1]["score"])
    assert all(Path(r["image"]).parent == scans for r in rows)
    assert not Path(ranking.runner.temp_dir).exists()  # the CSV was read before the runner removed its folder

    # another session (nothing owned) re-attaches to the finished run from its folder alone
    monkeypatch.setattr(training_logic, "_OWNED", {})
    follower = TrainingLogic().attach(run)
    assert isinstance(follower, TrainingSession) and not follower.owned
    follower.poll()
    assert follower.status == "finished" and follower.iteration == stopped_at + 2 and follower.progress == 1.0
    assert follower.eta_s is None
    assert [e["event"] for e in follower.events] == [e["event"] for e in resumed.events]


def _finished_run_in_process(run: Path) -> None:
    """A finished 2-iteration run made in this process (no child to start): the 'old run' of a folder."""
    from semisupseg.training import TrainConfig, Trainer

    cfg = TrainConfig(method="supervised", iterations=2, batch_size=2, labeled_batch_size=2, device="cpu", amp="off",
                      num_threads=1, out=str(run))
    cfg.data.labeled, cfg.data.validation, cfg.data.patch_size = str(HIPPO), 0, [16, 16, 16]
    cfg.model.n_filters = 4
    assert Trainer(cfg).run().status == "finished"


@pytest.mark.slow
def test_a_killed_child_is_crashed_for_its_owner_and_for_a_follower(tmp_path, monkeypatch):
    """A fresh start over a finished run shows the new run only, never the old log; SIGKILL of that real training
    child: a follower (a session that does not own it) sees it running from the run folder, then crashed; its owner
    reports crashed; the run's state stays resumable."""
    from semisupseg.training.heartbeat import run_status
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingSession, status_line

    run = tmp_path / "run"
    _finished_run_in_process(run)
    assert TrainingLogic().attach(run).status == "finished"
    logic = TrainingLogic()
    owner = logic.start(_settings(run, 2000, overwrite=True))  # the panel's "start afresh" answer
    owner.poll()  # the child is still importing: the old run's log is there, and must not be taken for this run's
    assert owner.events == [] and owner.status == "starting" and owner.iteration is None
    _wait_for(owner, lambda s: (s.iteration or 0) >= 2)
    assert all(e.get("max_iterations") == 2000 for e in owner.events if "max_iterations" in e)
    assert [e["event"] for e in owner.events].count("started") == 1 and owner.status == "running"
    follower = TrainingSession(run)
    assert not follower.owned and follower.status == "running"
    assert status_line(follower).startswith("running (started elsewhere), iteration")
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
    assert status_line(follower).startswith(f"crashed at iteration {follower.iteration}/2000: the training process")
    assert follower.eta_s is None and follower.iteration >= 2
    # the crashed run can be continued (its saved state), it is not "running" any more
    assert (run / "resume.pt").is_file() and (run / "config.yaml").is_file()
    monkeypatch.setattr(training_logic, "_OWNED", {})
    assert TrainingLogic().attach(run).status == "crashed"


def test_a_follower_polls_only_the_new_bytes_of_the_log(tmp_path, monkeypatch):
    """Polling a run never reads its whole events log again: the status comes from the heartbeat and the events
    already read (running, then crashed when the beat goes stale, then finished after a resume)."""
    import socket

    from semisupseg.training import events as events_module
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import TrainingSession

    run = tmp_path / "run"
    run.mkdir()
    log = run / "events.jsonl"
    beat = {"format": "semisupseg-heartbeat", "version": 1, "pid": 1, "host": socket.gethostname() + "-other",
            "interval_s": 2.0, "status": "running", "iteration": 1, "max_iterations": 3}

    def write(*records, beat_age=0.0, status="running"):
        with open(log, "a") as fh:
            fh.write("".join(json.dumps(dict(r, max_iterations=3)) + "\n" for r in records))
        (run / "heartbeat.json").write_text(json.dumps(dict(beat, beat=time.time() - beat_age, status=status)))

    monkeypatch.setattr(training_logic, "HEARTBEAT_POLL_S", 0.0)  # every poll looks at the heartbeat
    write({"event": "started", "iteration": 0}, {"event": "iteration", "iteration": 1, "lr": 0.01})
    follower = TrainingSession(run)
    assert follower.status == "running" and follower.iteration == 1

    def whole_log(*_a, **_k):
        raise AssertionError("the whole events log was read again")

    monkeypatch.setattr(events_module, "read_events", whole_log)
    write({"event": "iteration", "iteration": 2, "lr": 0.01}, beat_age=3600.0)  # then the process vanished
    assert [e["event"] for e in follower.poll()] == ["iteration"]
    assert follower.status == "crashed" and follower.iteration == 2
    write({"event": "resumed", "iteration": 2})
    follower.poll()
    assert follower.status == "running"
    write({"event": "iteration", "iteration": 3}, {"event": "finished", "iteration": 3}, status="finished")
    follower.poll()
    assert follower.status == "finished" and follower.iteration == 3


# ----------------------------------------------------------------------------------------------------------------------
# data check
# ----------------------------------------------------------------------------------------------------------------------

def test_data_check_is_the_report_of_check_data(tmp_path):
    from semisupseg.cli import main
    from semisupseg.errors import InputError
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingPanel, check_data_arguments

    logic = TrainingLogic()
    settings = _settings(tmp_path / "run", 10, method="mean-teacher", validation=1)
    panel = TrainingPanel(logic, scene=None)
    job = panel.check_data(settings)
    report = job.wait(timeout=120)
    update = panel.tick()
    assert update.check_lines == job.lines() and update.status == "no run" and panel.check is None
    assert update.cases == [c.case_id for c in report.cases]  # the overlay case selector's choices
    # --validation given: the split file's own 'val' list is replaced, so its cases are not the run's
    assert sorted(update.cases) == sorted(json.loads((HIPPO / "splits.json").read_text())["train"])
    out = io.StringIO()
    args = check_data_arguments(settings)
    assert args[:7] == ["check-data", "--method", "mean-teacher", "--labeled", str(HIPPO), "--validation", "1"]
    assert ["--set", "data.patch_size=[16, 16, 16]"] == args[7:9]
    with redirect_stdout(out):
        main(args + ["--json"])
    assert report.to_dict() == json.loads(out.getvalue())
    assert report.plan is not None and any("(from the data)" in line for line in report.plan_lines)
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
    assert job.runner.returncode == 2  # check-data's own verdict, its report read back from its --report file
    with pytest.raises(InputError, match="holds no model yet"):  # Annotate next needs the run's model
        panel.rank(tmp_path / "run", [HIPPO / "imagesTr"])


def test_the_data_check_runs_in_a_child_process_that_cancel_and_closing_the_panel_end(tmp_path):
    """The check reads every file: in Slicer a Python thread would run only while the GUI thread runs Python, so it
    runs as ``semisupseg check-data`` in a child process. A new check replaces a running one, and closing the panel
    ends it, each with its process tree; a cancelled check says so."""
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingPanel

    panel = TrainingPanel(TrainingLogic(), scene=None)
    first = panel.check_data(_settings(tmp_path / "run", 10))
    assert first.runner.pid is not None and first.runner.pid != os.getpid()
    pid = first.runner.pid
    second = panel.check_data(_settings(tmp_path / "run", 10))
    assert _gone(pid) and first.poll() and first.error == "data check cancelled" and first.lines() == \
        ["error: data check cancelled"]
    pid = second.runner.pid
    panel.close()
    assert _gone(pid) and panel.check is None and second.report is None
    third = TrainingLogic().check_data(_settings(tmp_path / "run", 10, labeled=str(tmp_path / "missing")))
    assert not third.wait(timeout=120).usable  # options that cannot be used: a report naming the folder
    assert any("missing" in line for line in third.lines() if line.startswith("error: "))


def test_a_new_ranking_and_closing_the_panel_kill_the_running_ranking(tmp_path):
    """Rank again while a ranking runs: the first one's process is killed (it would segment every scan for
    nothing, and write into a folder its runner removes). Closing the panel (module reload, Slicer exits) kills
    the running one. Several unlabeled folders in the panel's field are separated by ';'."""
    from helpers import gone
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingPanel, unlabeled_folders

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RANK_MODEL, run / "best.pt")
    panel = TrainingPanel(TrainingLogic(), scene=None)
    first = panel.rank(run, [HIPPO / "imagesTr"])
    first_pid = first.runner.pid
    second = panel.rank(run, [HIPPO / "imagesTr"])
    assert panel.ranking is second and not first.runner.running and gone([first_pid])
    second_pid = second.runner.pid
    panel.close()
    assert panel.ranking is None and not second.runner.running and gone([second_pid])
    panel.close()  # nothing running: nothing to do
    assert unlabeled_folders(" /a/u1 ; ;/b/u 2;") == ["/a/u1", "/b/u 2"] and unlabeled_folders("") == []


def test_a_ranking_with_an_unreadable_scan_shows_the_others(tmp_path):
    """rank skips a scan it cannot read and ranks the others (exit 2): the panel shows those rows and says the
    ranking is incomplete, naming the file, instead of dropping the whole table."""
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingPanel

    run, scans = tmp_path / "run", tmp_path / "scans"
    run.mkdir()
    scans.mkdir()
    shutil.copy(RANK_MODEL, run / "best.pt")
    for case in ("hippocampus_017", "hippocampus_023"):
        shutil.copy(HIPPO / "imagesTr" / f"{case}.nii.gz", scans)
    (scans / "broken.nii.gz").write_text("not an image")
    panel = TrainingPanel(TrainingLogic(), scene=None)
    job = panel.rank(run, [scans])
    job.wait(timeout=180)
    update = panel.tick()
    assert sorted(r["case"] for r in update.ranking) == ["hippocampus_017", "hippocampus_023"]
    assert len(update.errors) == 1 and update.errors[0].startswith("ranking incomplete") and "broken" in update.errors[0]


@pytest.mark.slow
def test_cancel_right_after_start_in_a_new_folder_stops_the_run(tmp_path):
    """The child had not made the folder yet, so the stop file could not be created: the run trained on until it
    was killed at the grace period (a short run simply finished). Now it stops cleanly; with nothing saved, the
    status says to start again, not to resume; an ended owned session gives way to a follower of the folder."""
    from SemiSupSegLib import training_logic
    from SemiSupSegLib.training_logic import TrainingLogic, status_line

    run = tmp_path / "new" / "run"
    logic = TrainingLogic()
    session = logic.start(_settings(run, 3000))
    session.cancel(grace_s=60.0)
    t0 = time.monotonic()
    assert session.wait(timeout=120) == "cancelled" and session.returncode == 130
    assert time.monotonic() - t0 < 50 and "killed" not in (session.message or "")
    assert _gone(session.runner.pid)
    if not (run / "resume.pt").is_file():
        assert "nothing was saved yet: Start again" in status_line(session)
    # the folder may now hold another run (the CLI's): attach follows the folder, not the ended child
    again = logic.attach(run)
    assert again is not session and not again.owned and training_logic._key(run) not in training_logic._OWNED


def test_a_run_folder_typed_with_a_tilde_is_the_same_folder_for_the_child(tmp_path, monkeypatch):
    from SemiSupSegLib.training_logic import resume_arguments, train_arguments

    monkeypatch.setenv("HOME", str(tmp_path))
    settings = _settings("~/runs/r1", 10, labeled="~/data", unlabeled=("~/more",))
    args = train_arguments(settings)
    assert args[args.index("--out") + 1] == str(tmp_path / "runs" / "r1")
    assert args[args.index("--stop-file") + 1] == str(tmp_path / "runs" / "r1" / ".stop")
    assert args[args.index("--labeled") + 1] == str(tmp_path / "data") and str(tmp_path / "more") in args
    resumed = resume_arguments("~/runs/r1")
    assert resumed[resumed.index("--resume") + 1] == str(tmp_path / "runs" / "r1")


def test_a_followed_run_whose_log_goes_away_keeps_its_history_and_says_so(tmp_path):
    from SemiSupSegLib.training_logic import TrainingSession, status_line

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "started", "iteration": 0, "max_iterations": 100}] + \
        [{"event": "iteration", "iteration": i, "max_iterations": 100, "loss": 1.0 / i} for i in range(1, 9)]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    session = TrainingSession(run)
    assert len(session.events) == 9
    (run / "events.jsonl").unlink()  # the folder renamed or deleted while the run goes on
    session.status = "running"
    session.poll()
    assert len(session.events) == 9 and not session.restarted and session.log_missing
    session.status = "running"
    assert "its events log is gone" in status_line(session) and str(run / "events.jsonl") in status_line(session)


# ----------------------------------------------------------------------------------------------------------------------
# a saved run in the form, and Resume with what the form changes
# ----------------------------------------------------------------------------------------------------------------------

class _Editor:
    """A stand-in for one Qt/CTK editor: only the property its kind has (as ``editor_value`` duck-types them)."""

    def __init__(self, prop, value):
        setattr(self, prop, value)


def _panel_widgets():
    kinds = {"method": "currentText", "device": "currentText", "overlay_cases": "currentText",
             "labeled": "currentPath", "labels": "currentPath", "unlabeled": "currentPath", "run_dir": "currentPath",
             "iterations": "value", "batch_size": "value", "labeled_batch_size": "value", "seed": "value",
             "overlay_every": "value"}
    from SemiSupSegLib.training_logic import PANEL_WIDGETS

    return {name: _Editor(kinds.get(name, "text"), "") for name, _ in PANEL_WIDGETS}


class _FakeQt:
    """``qt`` for ``method_form.make_editor``: widgets with the properties the panel reads."""

    class QCheckBox:
        def __init__(self):
            self.checked, self.toolTip = False, ""

    class QComboBox:
        def __init__(self):
            self.items, self.currentText, self.toolTip = [], "", ""

        def addItems(self, items):
            self.items += items

    class QLineEdit:
        def __init__(self, text=""):
            self.text, self.placeholderText, self.toolTip = text, "", ""


def _form_of_run(run_dir):
    """What the panel shows after the run folder ``run_dir`` is chosen, read back as settings (as Start and Resume
    read the form): the main editors and an Advanced section built for the run's method."""
    from SemiSupSegLib import method_form as mf
    from SemiSupSegLib.training_logic import run_panel_settings, show_run_settings

    saved = run_panel_settings(run_dir)
    assert saved is not None
    widgets = _panel_widgets()
    widgets["run_dir"].currentPath = str(run_dir)
    fields = mf.method_fields(saved[0]["method"]) + mf.engine_fields()
    editors = {f.key: mf.make_editor(f, _FakeQt) for f in fields}
    show_run_settings(saved, widgets, fields, editors)
    return widgets, fields, editors


def _read_form(widgets, fields, editors):
    from SemiSupSegLib import method_form as mf
    from SemiSupSegLib.training_logic import settings_from_panel

    values = mf.parse_values(fields, {k: mf.editor_value(e) for k, e in editors.items()})
    texts = {name: mf.editor_value(w) for name, w in widgets.items()}
    return settings_from_panel(texts, mf.overrides(fields, values))


def _train(args, cwd):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "semisupseg"] + [str(a) for a in args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_a_chosen_run_folder_shows_its_settings_and_resume_changes_only_what_is_edited(tmp_path):
    """Choosing a run folder fills the form with the run's saved settings (main and Advanced); read back, they change
    nothing on Resume. Edits become exactly the resume's changes (the CLI notes them, the child trains with them);
    an Advanced field set back to its default is a change too; the method, the network and the cases cannot change
    (one line naming each, before anything starts). Before, Resume passed the iteration count only: settings edited
    in the panel were silently not applied."""
    import dataclasses

    from semisupseg.errors import InputError
    from SemiSupSegLib.training_logic import TrainingLogic, resume_changes, train_arguments

    run = tmp_path / "run"
    started = _settings(run, 2, method="mean-teacher", unlabeled=(str(HIPPO / "imagesTr"),), batch_size=4,
                        validation="hippocampus_017", lr=0.02,
                        overrides=TINY + ("method_params.consistency=0.5", "optim.momentum=0.8", "val_every=2"))
    _train(train_arguments(started), tmp_path)
    widgets, fields, editors = _form_of_run(run)
    shown = _read_form(widgets, fields, editors)
    assert (shown.method, shown.labeled, shown.unlabeled, shown.lr, shown.batch_size, shown.validation) == \
        ("mean-teacher", str(HIPPO), (str(HIPPO / "imagesTr"),), 0.02, 4, "hippocampus_017")
    assert editors["method_params.consistency"].text == "0.5" and editors["optim.momentum"].text == "0.8"
    assert editors["amp"].currentText == "off" and editors["model.n_filters"].text == "4"
    assert resume_changes(run, shown) == []

    # the user edits the learning rate, the iterations and two Advanced fields (one back to its default)
    widgets["lr"].text, widgets["iterations"].value = "0.005", 4
    editors["method_params.consistency"].text = "0.25"
    default_momentum = next(f for f in fields if f.key == "optim.momentum").default
    editors["optim.momentum"].text = str(default_momentum)
    edited = _read_form(widgets, fields, editors)
    assert sorted(resume_changes(run, edited)) == sorted(["iterations=4", "optim.lr=0.005",
                                                          "method_params.consistency=0.25",
                                                          f"optim.momentum={default_momentum}"])
    for change, key in ((dict(method="sgrs"), "method"), (dict(validation="2"), "data.validation"),
                        (dict(overrides=edited.overrides + ("model.n_filters=8",)), "model.n_filters")):
        with pytest.raises(InputError, match=f"Resume cannot change .*{key}"):
            resume_changes(run, dataclasses.replace(edited, **change))
    # the data moved to another folder: the same cases, a change the CLI names
    assert f'data.labeled="{tmp_path}"' in resume_changes(run, dataclasses.replace(edited, labeled=str(tmp_path)))

    lines = []
    session = TrainingLogic().resume(run, settings=edited, on_log=lines.append)
    _wait_for(session, lambda s: s.ended)
    assert session.status == "finished", session.log_text
    assert "optim.lr 0.02 -> 0.005" in session.log_text and "momentum" in session.log_text
    lrs = [e["lr"] for e in session.events if e.get("event") == "iteration"]
    assert lrs[:2] == [pytest.approx(0.02)] * 2 and lrs[2:] == [pytest.approx(0.005)] * 2
    from semisupseg.training import load_run_config

    saved = load_run_config(run / "config.yaml")
    assert (saved.optim.lr, saved.method_params["consistency"], saved.iterations) == (0.005, 0.25, 4)


def test_a_run_whose_validation_came_from_its_split_file_shows_an_empty_validation_entry(tmp_path):
    """A run that took its validation cases from the split file shows an empty Validation entry (typed, it would
    replace the split's list and the resume would be refused); a folder without a run, or with a damaged config,
    changes nothing in the form."""
    from SemiSupSegLib.training_logic import resume_changes, run_panel_settings

    run = tmp_path / "run"
    _train(["train", "--method", "supervised", "--labeled", HIPPO, "--out", run, "--iterations", 1,
            "--patch-size", 16, 16, 16, "--batch-size", 2, "--device", "cpu"] +
           [a for o in TINY for a in ("--set", o)], tmp_path)
    widgets, fields, editors = _form_of_run(run)
    assert widgets["validation"].text == ""
    assert resume_changes(run, _read_form(widgets, fields, editors)) == []
    assert run_panel_settings(tmp_path / "nothing") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("method: [unclosed\n")
    assert run_panel_settings(tmp_path / "broken") is None


def test_editors_show_and_read_back_every_kind_of_value():
    """``make_editor`` builds the editor of each kind with its default; ``set_editor_value`` and ``editor_value``
    are inverses on each editor kind."""
    from SemiSupSegLib import method_form as mf

    for f in mf.method_fields("sgrs") + mf.engine_fields():
        editor = mf.make_editor(f, _FakeQt)
        assert f.parse(mf.editor_value(editor)) == f.parse(f.format(f.default)) or f.is_default(
            f.parse(mf.editor_value(editor))), f.key
    for prop, value in (("currentPath", "/data/run"), ("currentText", "cpu"), ("value", 7), ("checked", True),
                        ("text", "0.5")):
        editor = _Editor(prop, None)
        mf.set_editor_value(editor, value)
        assert mf.editor_value(editor) == value
    line = _Editor("text", "x")
    mf.set_editor_value(line, None)
    assert line.text == ""

    class Combo:  # a non-editable QComboBox: only its items can be its text
        def __init__(self, items):
            self.items, self.currentText = list(items), items[0]

        def findText(self, text):
            return self.items.index(text) if text in self.items else -1

        def addItem(self, text):
            self.items.append(text)

    overlay = Combo([""])  # before any data check: no case ids yet
    mf.set_editor_value(overlay, "hippocampus_015")
    assert overlay.items == ["", "hippocampus_015"] and mf.editor_value(overlay) == "hippocampus_015"
    device = Combo(["auto", "cpu", "cuda"])
    mf.set_editor_value(device, "cpu")
    assert device.items == ["auto", "cpu", "cuda"] and mf.editor_value(device) == "cpu"
    with pytest.raises(TypeError):
        mf.set_editor_value(object(), 1)


def test_annotate_next_segments_the_clicked_scan_and_reports_a_failure(headless, tmp_path):
    """A click on a ranked scan loads it and segments it with the run's model (the outcome comes in a tick's
    ``annotated``); a second click while it runs is refused before loading; a segmentation that fails is reported
    in ``errors`` (before, the widget dropped it: the scan stayed without a segmentation and nothing was said); a
    scan whose segmentation cannot start is removed again."""
    from semisupseg.catalogue import ModelCatalogue
    from semisupseg.errors import InputError
    from SemiSupSegLib.segment_logic import SegmentLogic
    from SemiSupSegLib.training_logic import TrainingLogic, TrainingPanel

    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(RANK_MODEL.with_suffix(suffix), run / f"best{suffix}")
    segment = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path))
    panel = TrainingPanel(TrainingLogic(), headless.scene)
    scan = HIPPO / "imagesTr" / "hippocampus_023.nii.gz"
    try:
        with pytest.raises(InputError, match="no model yet"):
            panel.annotate(segment, headless.load_volume, scan, tmp_path / "empty")
        volumes = headless.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        node = panel.annotate(segment, headless.load_volume, scan, run)
        with pytest.raises(InputError, match="being segmented"):
            panel.annotate(segment, headless.load_volume, scan, run)
        assert headless.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes + 1
        end = time.monotonic() + 300
        update = panel.tick()
        while update.annotated is None and not update.errors:
            assert time.monotonic() < end
            time.sleep(0.05)
            update = panel.tick()
        assert not update.errors and update.annotated.segmentation_node is not None
        assert "entropy" in update.annotated.overlay_nodes and panel.annotating is None

        # a segmentation that fails in the worker (weights that do not fit the card's network): said in errors
        import torch

        saved = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        name = next(iter(saved["state_dict"]))
        saved["state_dict"][name] = torch.zeros(1)
        torch.save(saved, run / "best.pt")
        node = panel.annotate(segment, headless.load_volume, scan, run)
        update = panel.tick()
        while panel.annotating is not None:
            assert time.monotonic() < end
            time.sleep(0.05)
            update = panel.tick()
        assert update.annotated is None and update.errors and "could not be segmented" in update.errors[0]

        # a segmentation that cannot start (no model card at all): the scan just loaded is removed again
        (run / "best.pt").write_bytes(b"not a model")
        (run / "best.json").unlink()
        before = headless.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        with pytest.raises(Exception):
            panel.annotate(segment, headless.load_volume, scan, run)
        assert headless.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before
        assert node.GetScene() is headless.scene
    finally:
        segment.close()
