"""SemiSupSegLib.live on a real MRML scene (slicer-core): the events log read incrementally (partial lines, growth,
truncation, replacement), table / plot series / chart nodes filled from a real training run's events and updated in
place, overlay sets of that run loaded into its subject-hierarchy folder with their colour nodes and refreshed, and
re-attaching to a finished and to a crashed run folder."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semisupseg.data import sample_dataset
from semisupseg.io import read_volume
from semisupseg.training import TrainConfig, Trainer, read_events

HIPPO = sample_dataset("hippocampus")
LABELED, UNLABELED = "hippocampus_008", "hippocampus_015"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished sgrs run on the bundled scans: 4 iterations, validation every 2, overlay sets at 2 and 4."""
    out = tmp_path_factory.mktemp("live") / "run"
    cfg = TrainConfig(method="sgrs", iterations=4, batch_size=4, labeled_batch_size=2, device="cpu", amp="off",
                      val_every=2, num_threads=1, out=str(out))
    cfg.data.labeled = str(HIPPO)
    cfg.data.split_labeled = "labeled_2"
    cfg.data.patch_size = [16, 16, 16]
    cfg.model.n_filters = 4
    cfg.overlays.cases = [LABELED, UNLABELED]
    cfg.overlays.every = 2
    assert Trainer(cfg).run().status == "finished"
    return out


def _lines(path: Path) -> list:
    return path.read_bytes().splitlines(keepends=True)


def test_reader_partial_lines_growth_and_restarts(tmp_path):
    from SemiSupSegLib.live import EventLogReader

    log = tmp_path / "events.jsonl"
    reader = EventLogReader(log)
    assert reader.read_new() == [] and not reader.restarted  # no file yet
    a = json.dumps({"event": "started", "iteration": 0}).encode() + b"\n"
    b = json.dumps({"event": "iteration", "iteration": 1, "loss": 0.5}).encode() + b"\n"
    log.write_bytes(a + b[:10])  # the writer is in the middle of a line
    assert [e["event"] for e in reader.read_new()] == ["started"]
    assert reader.read_new() == []
    with open(log, "ab") as fh:
        fh.write(b[10:])
    got = reader.read_new()
    assert [(e["event"], e["iteration"]) for e in got] == [("iteration", 1)] and not reader.restarted
    with open(log, "ab") as fh:  # growth, a line cut by a killed writer, an empty line
        fh.write(b"{\"event\": \"itera\n\n" + json.dumps({"event": "iteration", "iteration": 2}).encode() + b"\n")
    assert [e["iteration"] for e in reader.read_new()] == [2] and reader.skipped == 1
    # truncated and rewritten by a new run (shorter): restart from the top
    log.write_bytes(json.dumps({"event": "started", "iteration": 0, "method": "x"}).encode() + b"\n")
    got = reader.read_new()
    assert reader.restarted and reader.restarts == 1 and [e.get("method") for e in got] == ["x"]
    # replaced (a new file, as --overwrite or a new start after a failed one makes it), now longer
    log.unlink()
    log.write_bytes(a + b + b)
    got = reader.read_new()
    assert reader.restarted and reader.restarts == 2 and [e["event"] for e in got] == ["started", "iteration",
                                                                                       "iteration"]
    # rewritten in place, same inode, longer, different beginning
    with open(log, "r+b") as fh:
        fh.write(b + a + a + b)
    got = reader.read_new()
    assert reader.restarted and [e["event"] for e in got] == ["iteration", "started", "started", "iteration"]
    # the log went away (its folder deleted or renamed mid-run): what was read stays, and it is said
    log.unlink()
    assert reader.read_new() == [] and not reader.restarted and reader.missing
    assert reader.read_new() == [] and reader.missing and not reader.restarted
    log.write_bytes(a)  # there again: another file, read from the top
    assert [e["event"] for e in reader.read_new()] == ["started"] and reader.restarted and not reader.missing


def test_reader_drops_a_partial_line_the_resumed_writer_cut(tmp_path):
    """A killed run leaves half a line; its resume cuts it (events.drop_partial_line) and appends whole lines. Read
    after more than the fragment's bytes were appended, the fragment was glued into the middle of the new first
    line: a phantom event, the 'resumed' event lost."""
    from semisupseg.training.events import Events
    from SemiSupSegLib.live import EventLogReader

    log = tmp_path / "events.jsonl"
    whole = json.dumps({"event": "iteration", "iteration": 10, "loss": 0.5}).encode() + b"\n"
    cut = json.dumps({"event": "iteration", "iteration": 11, "loss": 0.4}).encode()[:17]
    log.write_bytes(whole + cut)
    reader = EventLogReader(log)
    assert [e["iteration"] for e in reader.read_new()] == [10]
    events = Events(path=log, bar=False)  # the resumed run's writer
    events.emit("resumed", iteration=10, max_iterations=20)
    events.emit("iteration", iteration=11, max_iterations=20, loss=0.3)
    events.close()
    got = reader.read_new()
    assert [(e["event"], e["iteration"]) for e in got] == [("resumed", 10), ("iteration", 11)]
    assert got[1]["loss"] == 0.3 and not reader.restarted and reader.skipped == 0


def test_plots_from_a_real_run_fed_in_pieces(run_dir, tmp_path, headless):
    from SemiSupSegLib.live import EventLogReader, TrainingPlots

    events = read_events(run_dir / "events.jsonl")
    data = (run_dir / "events.jsonl").read_bytes()
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    reader = EventLogReader(log)
    plots = TrainingPlots(headless.scene, "run", key="k")
    ids = {k: t.node.GetID() for k, t in plots.tables.items()}
    chart_ids = {k: c.GetID() for k, c in plots.charts.items()}
    # arrive in uneven pieces, cutting lines anywhere
    cuts = sorted({0, len(data)} | {int(x) for x in np.random.default_rng(1).integers(1, len(data), 9)})
    seen = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        with open(log, "ab") as fh:
            fh.write(data[lo:hi])
        new = reader.read_new()
        plots.add_events(new)
        seen += new
        rows = plots.tables["losses"].node.GetTable().GetNumberOfRows()
        assert rows == sum(e["event"] == "iteration" for e in seen)
    assert seen == events and {k: t.node.GetID() for k, t in plots.tables.items()} == ids
    assert {k: c.GetID() for k, c in plots.charts.items()} == chart_ids
    its = [e for e in events if e["event"] == "iteration"]
    assert list(plots.column("losses", "iteration")) == [e["iteration"] for e in its]
    assert np.allclose(plots.column("losses", "loss"), [e["loss"] for e in its])
    for term in ("supervised", "consistent", "noise_robust"):
        assert np.allclose(plots.column("losses", term), [e["losses"][term] for e in its])
    assert np.allclose(plots.column("figures", "lr"), [e["lr"] for e in its])
    assert np.allclose(plots.column("figures", "region_delta"), [e["logs"]["region_delta"] for e in its])
    vals = [e for e in events if e["event"] == "validation"]
    assert list(plots.column("validation", "iteration")) == [2, 4]
    assert np.allclose(plots.column("validation", "dice"), [e["metrics"]["dice"] for e in vals])
    # the charts: one series per loss column, Dice and HD95 apart, lr alone, the SGRS region fractions
    def names(chart):
        return sorted(chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(chart.GetNumberOfPlotSeriesNodes()))

    assert names(plots.charts["loss"]) == ["consistent", "loss", "noise_robust", "supervised"]
    assert names(plots.charts["dice"]) == ["dice"] and names(plots.charts["hd95"]) == ["hd95"]
    assert names(plots.charts["lr"]) == ["lr"]
    assert names(plots.charts["figures"]) == ["pseudo_fg", "region_delta", "region_omega", "region_theta"]
    series = plots.charts["loss"].GetNthPlotSeriesNode(0)
    assert series.GetTableNodeID() == ids["losses"] and series.GetXColumnName() == "iteration"
    # a resumed run at iteration 2 recomputes 3 and 4: their rows go, then come back with the new values
    plots.add_events([{"event": "resumed", "iteration": 2, "max_iterations": 4}])
    assert list(plots.column("losses", "iteration")) == [1, 2] and list(plots.column("validation", "iteration")) == [2]
    plots.add_events([dict(its[2], loss=9.0)])
    assert list(plots.column("losses", "loss"))[-1] == 9.0
    # a term that appears later gets a column (NaN before) and a series
    plots.add_events([{"event": "iteration", "iteration": 4, "loss": 1.0, "losses": {"supervised": 1.0, "adv": 0.1}}])
    adv = plots.column("losses", "adv")
    assert np.isnan(adv[:-1]).all() and adv[-1] == pytest.approx(0.1)
    assert "adv" in names(plots.charts["loss"])
    # the same nodes are found again by a new TrainingPlots with the same key (re-attaching)
    again = TrainingPlots(headless.scene, "run", key="k")
    assert {k: t.node.GetID() for k, t in again.tables.items()} == ids
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == len(chart_ids)


def test_monitor_attaches_to_a_finished_run_and_loads_overlays(run_dir, headless):
    from SemiSupSegLib import colors
    from SemiSupSegLib.live import TrainingMonitor, run_folder_item
    from SemiSupSegLib.scene import volume_from_node

    scene = headless.scene
    monitor = TrainingMonitor(scene, run_dir, name="sgrs run")
    monitor.attach()
    st = monitor.state
    assert st["status"] == "finished" and st["iteration"] == 4 and st["fraction"] == 1.0
    assert st["method"] == "sgrs" and st["validation"]["dice"] is not None
    assert st["line"].startswith("finished at iteration 4/4 in ") and "best validation Dice" in st["line"]
    sh = scene.GetSubjectHierarchyNode()
    run_item = run_folder_item(scene, run_dir)
    assert sh.GetItemName(run_item) == "Training run sgrs run"
    children = {}
    for case in (LABELED, UNLABELED):
        manifest = monitor.overlays.loaded[case]
        assert manifest["iteration"] == 4
        for f in manifest["files"]:
            node = monitor.overlays.nodes[(case, f["kind"], f.get("class"))]
            item = sh.GetItemByDataNode(node)
            folder = sh.GetItemParent(item)
            assert sh.GetItemParent(folder) == run_item
            assert sh.GetItemName(folder) == f"{case} overlays (iteration 4, teacher)"
            children.setdefault(case, []).append(node)
            # the node holds the file's volume with its geometry
            vol = volume_from_node(node)
            ref = read_volume(f["path"])
            assert vol.same_geometry(ref) and np.allclose(vol.array, ref.array)
            display = node.GetDisplayNode()
            if f["kind"] in ("sdm", "gt_sdm"):
                assert display.GetColorNodeID() == colors.color_node(scene, "sdm").GetID()
                assert display.GetWindowLevelMin() == pytest.approx(-display.GetWindowLevelMax())
            elif f["kind"] == "regions":
                assert node.IsA("vtkMRMLLabelMapVolumeNode")
                table = display.GetColorNode()
                assert table.GetID() == colors.color_node(scene, "regions").GetID()
                assert [table.GetColorName(v) for v in (1, 2, 3)] == ["uncertain (Delta)", "agree (Omega)",
                                                                      "disagree (Theta)"]
            elif f["kind"] == "segmentation":
                assert node.IsA("vtkMRMLLabelMapVolumeNode")
                assert display.GetColorNode().GetColorName(2) == "Posterior"
            elif f["kind"] == "ring":
                assert node.IsA("vtkMRMLLabelMapVolumeNode")
                assert display.GetColorNode().GetColorName(1).startswith("M_bound")
            elif f["kind"] == "entropy":
                assert display.GetColorNodeID() == colors.color_node(scene, "entropy").GetID()
    kinds = {c: sorted({monitor.overlays.nodes[k].GetAttribute("SemiSupSeg.LiveKey").split("|")[3]
                        for k in monitor.overlays.nodes if k[0] == c}) for c in (LABELED, UNLABELED)}
    assert kinds[LABELED] == ["entropy", "gt_sdm", "ring", "sdm", "segmentation"]
    assert kinds[UNLABELED] == ["entropy", "regions", "sdm", "segmentation"]
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    # polling again changes nothing; a second monitor (module reopened) finds the same nodes
    monitor.poll()
    again = TrainingMonitor(scene, run_dir, name="sgrs run")
    again.attach()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes
    assert again.plots.tables["losses"].node.GetID() == monitor.plots.tables["losses"].node.GetID()
    assert again.plots.tables["losses"].rows == 4  # the log read once, not appended twice
    for key, node in monitor.overlays.nodes.items():
        assert again.overlays.nodes[key].GetID() == node.GetID()


def test_newer_overlay_set_updates_the_same_nodes(run_dir, tmp_path, headless):
    from SemiSupSegLib.live import OverlayLoader

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    case_dir = run / "overlays" / UNLABELED
    newest = case_dir / "it000004"
    hidden = case_dir / ".it000004.incoming"
    newest.rename(hidden)  # only the set of iteration 2 is there
    loader = OverlayLoader(headless.scene, run)
    assert loader.load(UNLABELED)["iteration"] == 2
    before = {k: n.GetID() for k, n in loader.nodes.items()}
    ent2 = read_volume(case_dir / "it000002" / "entropy.nii.gz").array
    hidden.rename(newest)  # the engine renames a finished set into place
    manifest = loader.load(UNLABELED)
    assert manifest["iteration"] == 4
    assert {k: n.GetID() for k, n in loader.nodes.items()} == before
    from SemiSupSegLib.scene import volume_from_node

    node = loader.nodes[(UNLABELED, "entropy", None)]
    ent4 = read_volume(newest / "entropy.nii.gz").array
    assert node.GetAttribute("SemiSupSeg.Iteration") == "4"
    assert np.allclose(volume_from_node(node).array, ent4) and not np.allclose(ent2, ent4)


def test_a_damaged_overlay_manifest_is_passed_over(run_dir, tmp_path, headless):
    """A manifest that is not JSON, or lacks a key, raised out of every timer tick of the panel."""
    from SemiSupSegLib.live import OverlayLoader

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    loader = OverlayLoader(headless.scene, run)
    assert loader.load(UNLABELED)["iteration"] == 4
    manifest = run / "overlays" / UNLABELED / "it000004" / "manifest.json"
    manifest.write_text("{not json")
    assert loader.load(UNLABELED, force=True)["iteration"] == 4  # the set shown stays
    assert UNLABELED not in loader.cases()
    manifest.write_text(json.dumps({"case": UNLABELED, "iteration": 4}))  # no model, no files
    assert loader.load(UNLABELED, force=True)["iteration"] == 4 and UNLABELED in loader.cases()


def test_monitor_on_a_crashed_run_and_a_restarted_log(run_dir, tmp_path, headless, monkeypatch):
    from semisupseg.training import events as events_module
    from SemiSupSegLib.live import TrainingMonitor

    run = tmp_path / "crashed"
    shutil.copytree(run_dir, run)
    lines = _lines(run / "events.jsonl")
    keep = [ln for ln in lines if json.loads(ln)["event"] not in ("finished",)]
    cut = [i for i, ln in enumerate(keep) if json.loads(ln)["event"] == "iteration"][2]
    (run / "events.jsonl").write_bytes(b"".join(keep[:cut + 1]) + keep[cut + 1][:7])  # killed mid-line
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    hb = json.loads((run / "heartbeat.json").read_text())
    hb.update(status="running", pid=int(dead.stdout), pid_start=None, ended=None)
    (run / "heartbeat.json").write_text(json.dumps(hb))
    monitor = TrainingMonitor(headless.scene, run, load_overlays=False)
    monitor.attach()
    assert monitor.state["status"] == "crashed" and monitor.state["iteration"] == 3
    assert "crashed at iteration 3" in monitor.state["line"]
    assert monitor.plots.tables["losses"].rows == 3
    # a new run starts in the folder: the log is replaced, the plots start over on the same nodes
    node_id = monitor.plots.tables["losses"].node.GetID()
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").write_text(json.dumps({"event": "started", "iteration": 0, "max_iterations": 9,
                                                  "method": "dtc"}) + "\n"
                                      + json.dumps({"event": "iteration", "iteration": 1, "max_iterations": 9,
                                                    "loss": 2.0, "losses": {"dice": 2.0}, "lr": 0.1}) + "\n")
    monitor.poll()
    assert monitor.reader.restarted and monitor.plots.tables["losses"].node.GetID() == node_id
    assert list(monitor.plots.column("losses", "loss")) == [2.0]
    assert math.isnan(monitor.plots.column("losses", "supervised")[0])
    assert monitor.state["method"] == "dtc" and monitor.state["max_iterations"] == 9
    # the state follows the new log only, and a poll reads only what was added to it (never the whole log)
    assert monitor.state["status"] == "crashed" and monitor.state["iteration"] == 1

    def whole_log(*_a, **_k):
        raise AssertionError("the whole events log was read again")

    monkeypatch.setattr(events_module, "read_events", whole_log)
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "finished", "iteration": 1, "max_iterations": 9}) + "\n")
    monitor.poll()
    assert monitor.state["status"] == "finished"


def test_a_restarted_run_folder_reloads_its_overlay_sets(run_dir, tmp_path, headless):
    """After a new run replaced the followed one (CLI --overwrite), a set of the new run at the iteration of the
    old one's shown set was taken for it and not loaded: the old run's entropy stayed on screen."""
    from SemiSupSegLib.training_logic import RunView, TrainingSession

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    session = TrainingSession(run)
    view = RunView(headless.scene, session)
    assert view.overlays.loaded
    session.restarted = True  # what poll() says when the log was replaced
    view.update([])
    assert view.overlays.loaded == {}
