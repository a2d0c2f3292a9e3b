"""Faults around the Slicer runner (issue 13): the child killed from outside, killed while it writes its outputs,
the scene closed mid-run, the module closing mid-run. Each time: the scene is unchanged or complete, the temporary
files are removed, and no process of the run's tree survives (checked in ``/proc``).

What ``Testing/slicer/test_runner.py`` already covers is not repeated here (cancel kills a stubborn tree, strays
after a normal exit, escaped processes holding the pipes, stale folders of dead runs, a killed training child seen
as crashed)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # the Slicer module folders are on sys.path (conftest.py)
SAMPLE_DATA = REPO / "src" / "semisupseg" / "sample_data"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and /proc")

MODEL = REPO / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"
SCAN = SAMPLE_DATA / "hippocampus" / "imagesTr" / "hippocampus_023.nii.gz"
LA_SCAN = next((SAMPLE_DATA / "la" / "imagesTr").glob("*.nii.gz"))

#: a child entry that SIGKILLs itself when the ``KILL_AT_NTH``-th (default 1st) file named ``*KILL_AT_OUTPUT`` is
#: about to be renamed into place, its temporary file cut to half first, as a kill in the middle of the write leaves
#: it. ``sys.argv`` after ``-c CODE`` is ``-m semisupseg ARGS``.
KILL_IN_WRITE = r"""
import os, signal, sys
real_replace = os.replace
seen = [0]
def replace(src, dst, *a, **k):
    if os.path.basename(str(dst)).endswith(os.environ["KILL_AT_OUTPUT"]):
        seen[0] += 1
    if seen[0] == int(os.environ.get("KILL_AT_NTH", "1")) and os.path.basename(str(dst)).endswith(
            os.environ["KILL_AT_OUTPUT"]):
        size = os.path.getsize(src)
        with open(src, "r+b") as fh:
            fh.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from semisupseg.cli import main
sys.exit(main(sys.argv[3:]))
"""



def process_tree(pid: int) -> list:
    """``pid`` and every live process in its process group (the runner starts each child in its own session)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if (int(entry.name) == pid or pgid == pid) and state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _wait_for(runner, events, kind, timeout=180):
    deadline = time.monotonic() + timeout
    while not any(e.get("event") == kind for e in events):
        runner.poll()
        assert runner.running and time.monotonic() < deadline, runner.log_text
        time.sleep(0.02)


def _scene_state(scene):
    nodes = scene.GetNodes()
    return [(n.GetID(), n.GetClassName(), n.GetName(), n.GetMTime()) for n in
            (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))]


@pytest.mark.slow
def test_segment_child_killed_from_outside_mid_run(tmp_path):
    from SemiSupSegLib.runner import ProcessRunner

    events = []
    runner = ProcessRunner(["segment", str(LA_SCAN), "--model", str(MODEL), "-o", "{temp_dir}/out", "--json-progress",
                            "--layout", "papers", "--sdm", "--entropy"],
                           on_event=events.append, env={"OMP_NUM_THREADS": "1"})
    runner.start()
    temp = runner.temp_dir
    _wait_for(runner, events, "progress")
    tree = process_tree(runner.pid)
    assert runner.pid in tree
    os.kill(runner.pid, signal.SIGKILL)  # the OOM killer, or a user's kill -9
    rc = runner.wait(timeout=60)
    assert rc == -signal.SIGKILL and events[-1]["event"] == "exit" and not events[-1]["cancelled"]
    assert runner.error.startswith("the process was killed (SIGKILL)"), runner.error
    assert not temp.exists()  # its outputs and stop file went with the folder
    assert process_tree(tree[0]) == []


@pytest.mark.slow
def test_segment_child_killed_while_it_writes_its_outputs_then_run_again(tmp_path):
    """The kill lands in the middle of the label map's write: the output folder holds no label map (only the
    writer's hidden temporary file); the same command run again writes a complete one and clears that file."""
    from semisupseg.fileio import temp_destination
    from semisupseg.io import read_volume
    from SemiSupSegLib.runner import ProcessRunner

    out = tmp_path / "out"
    args = ["segment", str(SCAN), "--model", str(MODEL), "-o", str(out), "--json-progress"]
    events = []
    runner = ProcessRunner(args, on_event=events.append, env={"KILL_AT_OUTPUT": "_label.nii.gz",
                                                            "OMP_NUM_THREADS": "1"},
                           python=[sys.executable, "-c", KILL_IN_WRITE])
    runner.start()
    temp = runner.temp_dir
    assert runner.wait(timeout=180) == -signal.SIGKILL, runner.log_text
    assert not temp.exists() and process_tree(runner.pid) == []
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 1 and temp_destination(left[0]) == "hippocampus_023_label.nii.gz", left
    rerun = ProcessRunner(args, env={"OMP_NUM_THREADS": "1"})
    assert rerun.start().wait(timeout=180) == 0, rerun.log_text
    assert sorted(p.name for p in out.iterdir()) == ["hippocampus_023_label.nii.gz"]
    assert read_volume(out / "hippocampus_023_label.nii.gz").shape_zyx == read_volume(SCAN).shape_zyx


@pytest.mark.slow
def test_training_child_killed_while_it_writes_resume_state_then_resumed_through_the_runner(tmp_path):
    from semisupseg.checkpoint import load_state
    from semisupseg.training import read_events
    from SemiSupSegLib.runner import ProcessRunner

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({
        "method": "supervised", "iterations": 6, "batch_size": 2, "labeled_batch_size": 2, "device": "cpu",
        "amp": "off", "num_threads": 1, "val_every": 6, "save_every": 2, "seed": 1, "model": {"n_filters": 2},
        "data": {"labeled": str(SAMPLE_DATA / "hippocampus"), "validation": 1, "patch_size": [32, 32, 32]}}))
    run = tmp_path / "run"
    killed = ProcessRunner(["train", "--config", str(cfg), "--out", str(run), "--events", "-", "--no-bar"],
                           env={"KILL_AT_OUTPUT": "resume.pt", "KILL_AT_NTH": "2", "OMP_NUM_THREADS": "1"},
                           python=[sys.executable, "-c", KILL_IN_WRITE])
    killed.start()
    assert killed.wait(timeout=300) == -signal.SIGKILL, killed.log_text
    assert process_tree(killed.pid) == [] and not killed.temp_dir.exists()
    assert load_state(run / "resume.pt")["iteration"] == 2  # the state before the cut write, whole
    assert [p.name for p in run.iterdir() if p.name.startswith(".resume.pt.")]  # the cut temporary file
    events = []
    resumed = ProcessRunner(["train", "--resume", str(run), "--events", "-", "--no-bar"], on_event=events.append,
                            env={"OMP_NUM_THREADS": "1"})
    assert resumed.start().wait(timeout=300) == 0, resumed.log_text
    assert [e["event"] for e in events if e["event"] in ("resumed", "started", "finished")] == ["resumed",
                                                                                                "finished"]
    assert load_state(run / "resume.pt")["iteration"] == 6
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # the temporary file was cleared
    assert read_events(run / "events.jsonl")[-1]["event"] == "finished"


@pytest.mark.slow
def test_scene_closed_mid_segmentation_adds_nothing_and_leaves_no_files(headless, tmp_path):
    from semisupseg.catalogue import ModelCatalogue
    from SemiSupSegLib.runner import WorkerClient
    from SemiSupSegLib.segment_logic import SegmentCancelled, SegmentLogic, SegmentRequest

    worker = WorkerClient(threads=1)
    logic = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path),
                         worker=worker)
    try:
        scan = headless.load_volume(LA_SCAN)  # many windows: time to close the scene mid-run
        closed = []

        def close_on_first_progress(fraction, message, eta):
            if not closed:
                closed.append(True)
                headless.scene.Clear(0)  # File > Close Scene
        job = logic.start(SegmentRequest(scan, str(MODEL), quality="accurate", overlays=("sdm", "entropy")),
                          on_progress=close_on_first_progress)
        after_close = None
        with pytest.raises(SegmentCancelled):
            deadline = time.monotonic() + 300
            while not job.poll():
                if closed and after_close is None:
                    after_close = _scene_state(headless.scene)
                assert time.monotonic() < deadline
                time.sleep(0.02)
            job.result()
        assert closed and job.state == "cancelled" and logic.job is None
        assert _scene_state(headless.scene) == after_close  # nothing added to the closed scene
        assert not any(n.GetClassName() == "vtkMRMLSegmentationNode" for n in
                       (headless.scene.GetNodes().GetItemAsObject(i)
                        for i in range(headless.scene.GetNumberOfNodes())))
        assert not list(worker.temp_dir.iterdir()), "temporary files left behind"
        # the next click, on the new scene, works (the scene is complete again)
        outcome = logic.segment(SegmentRequest(headless.load_volume(SCAN), str(MODEL), overlays=()), timeout=300)
        assert outcome.segmentation_node.GetSegmentation().GetNumberOfSegments() == 2
        pid = worker.pid
    finally:
        logic.close()
        worker.close()
    assert process_tree(pid) == []


@pytest.mark.slow
def test_module_closing_mid_segmentation_stops_the_worker_tree_and_removes_its_files(headless, tmp_path):
    """Slicer quitting (the module's cleanup calls the logic's close) while a job runs: the job is cancelled, the
    worker the logic made and everything it started are gone, its folder too; the scene is as before."""
    from semisupseg.catalogue import ModelCatalogue
    from SemiSupSegLib.segment_logic import SegmentLogic, SegmentRequest

    logic = SegmentLogic(headless.scene, headless.logic("Segmentations"), catalogue=ModelCatalogue(home=tmp_path),
                         worker_threads=1)
    scan = headless.load_volume(LA_SCAN)
    state = _scene_state(headless.scene)
    started = []
    job = logic.start(SegmentRequest(scan, str(MODEL), quality="accurate"),
                      on_progress=lambda *a: started.append(True))
    worker = logic.worker
    deadline = time.monotonic() + 300
    while not started:
        job.poll()
        assert job.running and time.monotonic() < deadline
        time.sleep(0.02)
    pid, temp = worker.pid, worker.temp_dir
    assert pid in process_tree(pid)
    logic.close()
    assert job.state == "cancelled" and logic.job is None
    assert process_tree(pid) == [] and not temp.exists()
    assert _scene_state(headless.scene) == state
