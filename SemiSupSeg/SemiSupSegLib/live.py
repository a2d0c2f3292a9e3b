"""Live view of a training run in the scene: its events as tables and plot charts, its newest overlay set in a
subject-hierarchy folder, its state from the run folder's heartbeat (Qt-free; the training panel polls it from a
timer).

* :class:`EventLogReader` reads ``RUN_DIR/events.jsonl`` incrementally: each :meth:`~EventLogReader.read_new`
  returns the events completed since the last call; a partial last line (the writer is mid-line) is kept for
  later, and dropped when a resumed writer cut it; a file that shrank, was replaced (another inode), went away and
  came back, or whose first bytes changed is a restart (a new run in the folder): reading starts again from the top
  and :attr:`~EventLogReader.restarted` says so. A log that went away and stays away (its folder deleted or renamed
  mid-run) keeps what was read, and :attr:`~EventLogReader.missing` says so.
* :class:`TrainingPlots` keeps table nodes (``vtkMRMLTableNode``), plot series and plot chart nodes of one run and
  appends to them as events arrive — the same nodes all along:

  - losses table: ``iteration``, ``loss`` (the total) and one column per loss term (columns appear with their
    first value; earlier rows hold NaN) → chart *Loss*;
  - validation table: ``iteration``, ``dice``, ``hd95`` → charts *Validation Dice* and *Validation HD95 (mm)*;
  - figures table: ``iteration``, ``lr`` and every number of the method's ``logs`` → charts *Learning rate* and
    *Method figures* (the SGRS region fractions ``region_*``, discriminator accuracies ``*acc*``, the pseudo-label
    foreground ``pseudo_fg``).

  A ``resumed`` event at iteration k drops the rows after k (the resumed run computes those iterations again); a
  restart of the log clears every table.
* :class:`OverlayLoader` loads the newest overlay set of a case (:mod:`semisupseg.training.snapshots`) into the
  scene — prediction and ground-truth SDMs with the diverging map, entropy, regions as a labelmap with their legend,
  segmentation and boundary rings as labelmaps with class legends (:mod:`SemiSupSegLib.results`,
  :mod:`SemiSupSegLib.colors`) — under a subject-hierarchy folder of the run (one sub-folder per case), and updates
  the same nodes when a newer set is loaded.
* :class:`TrainingMonitor` ties them to one run folder: ``poll()`` reads new events, updates the plots, loads the
  overlay sets the events announce, and keeps :attr:`~TrainingMonitor.state` (iteration, ETA, learning rate, last
  validation, status from :func:`semisupseg.training.heartbeat.run_state`), so reopening the module or pointing it
  at a run folder re-attaches to a running, finished or crashed run.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from semisupseg.runplot import FIGURE_KEYS, event_number, is_figure_key, parse_event_lines
from semisupseg.volume import Volume

from .results import ensure_sh_item, show_overlay
from .scene import update_volume_node

__all__ = [
    "EventLogReader",
    "TrainingPlots",
    "OverlayLoader",
    "TrainingMonitor",
    "run_folder_item",
    "FIGURE_KEYS",
]

PathLike = Union[str, Path]
RUN_ATTRIBUTE = "SemiSupSeg.RunDir"
NODE_ATTRIBUTE = "SemiSupSeg.LiveKey"
# FIGURE_KEYS (the log keys drawn in the *Method figures* chart), the event line rule and the number rule are
# semisupseg.runplot's: the panel charts a run by the rules ``semisupseg plot-run`` draws it by
_HEAD = 256

_PALETTE = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
            (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81)]


# ----------------------------------------------------------------------------------------------------------------------
# the events log
# ----------------------------------------------------------------------------------------------------------------------

class EventLogReader:
    """Incremental reader of a JSON-lines events log (see the module docstring).

    Attributes after each :meth:`read_new`: ``restarted`` (this call started again from the top), ``restarts``
    (how many times so far), ``skipped`` (complete lines that were not JSON objects, e.g. a line cut by a killed
    writer and continued by the next run), ``offset`` (bytes consumed, the partial line included)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.offset = 0
        self.restarted = False
        self.restarts = 0
        self.skipped = 0
        self._partial = b""
        self._ident: Optional[Tuple[int, int]] = None
        self._head = b""
        #: the log was read before and is gone now (its folder deleted or renamed): what was read is kept; a log
        #: that appears again is a new file, read from the top (a restart)
        self.missing = False

    def reset(self) -> None:
        """Forget what was read (the next call reads from the top)."""
        self.offset = 0
        self._partial = b""
        self._ident = None
        self._head = b""

    def _changed(self, st: os.stat_result) -> bool:
        if self._ident is None:
            return False
        complete = self.offset - len(self._partial)  # the unfinished last line may be cut by a resumed writer
        if (st.st_dev, st.st_ino) != self._ident or st.st_size < complete:
            return True
        head = self._head[:complete]
        if head:
            try:
                with open(self.path, "rb") as fh:
                    return fh.read(len(head)) != head
            except OSError:
                return True
        return False

    def read_new(self) -> List[Dict[str, Any]]:
        """The events completed since the last call (``[]`` while the file does not exist)."""
        self.restarted = False
        try:
            st = os.stat(self.path)
        except OSError:
            self.missing = bool(self.offset or self._partial)
            return []
        came_back, self.missing = self.missing, False
        if came_back or self._changed(st):  # a log that went away and is there again is another file
            self.reset()
            self.restarted = True
            self.restarts += 1
        try:
            with open(self.path, "rb") as fh:
                if self._partial:  # the unfinished last line: a resumed writer cuts it and appends whole lines
                    fh.seek(self.offset - len(self._partial))
                    if fh.read(len(self._partial)) != self._partial:
                        self.offset -= len(self._partial)
                        self._partial = b""
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        if self._ident is None:
            self._ident = (st.st_dev, st.st_ino)
        if len(self._head) < _HEAD and self.offset == len(self._head):
            self._head = (self._head + data)[:_HEAD]
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out, skipped = parse_event_lines(lines)
        self.skipped += skipped
        return out


# ----------------------------------------------------------------------------------------------------------------------
# tables and plots
# ----------------------------------------------------------------------------------------------------------------------

class _Table:
    """One table node with its columns kept as Python lists (NaN where an event had no value)."""

    def __init__(self, scene, name: str, key: str):
        self.scene = scene
        self.node = _find_node(scene, "vtkMRMLTableNode", key)
        if self.node is None:
            self.node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
            self.node.SetAttribute(NODE_ATTRIBUTE, key)
        self.columns: Dict[str, List[float]] = {"iteration": []}
        self._sync()

    def append(self, iteration: float, values: Dict[str, float]) -> List[str]:
        """Add a row; returns the names of columns created for it."""
        n = len(self.columns["iteration"])
        new = []
        for name in values:
            if name not in self.columns:
                self.columns[name] = [math.nan] * n
                new.append(name)
        self.columns["iteration"].append(float(iteration))
        for name, col in self.columns.items():
            if name != "iteration":
                col.append(values.get(name, math.nan))
        return new

    def drop_after(self, iteration: float) -> None:
        keep = [i for i, it in enumerate(self.columns["iteration"]) if it <= iteration]
        for name in self.columns:
            self.columns[name] = [self.columns[name][i] for i in keep]

    def clear(self) -> None:
        for name in self.columns:
            self.columns[name] = []

    @property
    def rows(self) -> int:
        return len(self.columns["iteration"])

    def _sync(self) -> None:
        """Write the lists into the node's vtkTable, reusing its column arrays."""
        table = self.node.GetTable()
        new = []
        for name, values in self.columns.items():  # existing columns first: a table takes a new column only
            arr = table.GetColumnByName(name)       # when it has the table's number of rows
            if arr is None:
                arr = vtk.vtkDoubleArray()
                arr.SetName(name)
                new.append(arr)
            arr.SetNumberOfTuples(len(values))
            if values:
                numpy_support.vtk_to_numpy(arr)[:] = np.asarray(values, dtype=np.float64)
            arr.Modified()
        for arr in new:
            table.AddColumn(arr)
        table.Modified()
        self.node.Modified()


class TrainingPlots:
    """Tables, plot series and charts of one training run (see the module docstring), made in ``scene`` on first
    use or found again by their keys (``key``: e.g. the run folder), and updated by :meth:`add_events`."""

    CHARTS = {"loss": ("Loss", "loss"), "dice": ("Validation Dice", "Dice"),
              "hd95": ("Validation HD95 (mm)", "HD95 (mm)"), "lr": ("Learning rate", "learning rate"),
              "figures": ("Method figures", "value")}

    def __init__(self, scene, name: str = "Training", key: Optional[str] = None):
        self.scene = scene
        self.name = name
        self.key = key or name
        self.tables = {kind: _Table(scene, f"{name} {label}", f"{self.key}|table|{kind}")
                       for kind, label in (("losses", "losses"), ("validation", "validation"),
                                           ("figures", "learning rate and method figures"))}
        self.charts: Dict[str, Any] = {}
        for kind, (title, ylabel) in self.CHARTS.items():
            chart = _find_node(scene, "vtkMRMLPlotChartNode", f"{self.key}|chart|{kind}")
            if chart is None:
                chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{name} {title}"))
                chart.SetAttribute(NODE_ATTRIBUTE, f"{self.key}|chart|{kind}")
            chart.SetTitle(f"{name}: {title}")
            chart.SetXAxisTitle("iteration")
            chart.SetYAxisTitle(ylabel)
            self.charts[kind] = chart
        self.series: Dict[Tuple[str, str], Any] = {}
        self.last_iteration: Optional[int] = None

    # ----------------------------------------------------------------------------------------------------------
    def _series(self, chart_kind: str, table_kind: str, column: str):
        """The plot series drawing ``column`` of a table in a chart (made once)."""
        key = (chart_kind, column)
        if key in self.series:
            return self.series[key]
        node_key = f"{self.key}|series|{chart_kind}|{column}"
        series = _find_node(self.scene, "vtkMRMLPlotSeriesNode", node_key)
        if series is None:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode",
                                                  self.scene.GenerateUniqueName(f"{self.name} {column}"))
            series.SetAttribute(NODE_ATTRIBUTE, node_key)
        series.SetAndObserveTableNodeID(self.tables[table_kind].node.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if table_kind != "validation"
                              else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        chart = self.charts[chart_kind]
        series.SetColor(*_PALETTE[chart.GetNumberOfPlotSeriesNodes() % len(_PALETTE)])
        if not chart.HasPlotSeriesNodeID(series.GetID()):
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series[key] = series
        return series

    def clear(self) -> None:
        """Empty every table (a new run in the folder); the nodes stay."""
        for table in self.tables.values():
            table.clear()
            table._sync()
        self.last_iteration = None

    def add_events(self, events: Sequence[Dict[str, Any]]) -> bool:
        """Append what ``events`` hold to the tables; returns whether anything changed."""
        touched = set()
        for e in events:
            kind = e.get("event")
            if kind == "resumed" and e.get("iteration") is not None:
                for name, table in self.tables.items():
                    if table.rows and max(table.columns["iteration"]) > float(e["iteration"]):
                        table.drop_after(float(e["iteration"]))
                        touched.add(name)
            elif kind == "started" and any(t.rows for t in self.tables.values()):
                for name, table in self.tables.items():
                    table.clear()
                    touched.add(name)
            elif kind == "iteration":
                it = e.get("iteration")
                if it is None:
                    continue
                self.last_iteration = int(it)
                losses = {"loss": event_number(e.get("loss"))}
                losses.update({str(k): event_number(v) for k, v in (e.get("losses") or {}).items()})
                for col in self.tables["losses"].append(it, losses):
                    self._series("loss", "losses", col)
                figures = {"lr": event_number(e.get("lr"))}
                figures.update({str(k): event_number(v) for k, v in (e.get("logs") or {}).items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)})
                for col in self.tables["figures"].append(it, figures):
                    if col == "lr":
                        self._series("lr", "figures", col)
                    elif is_figure_key(col):
                        self._series("figures", "figures", col)
                touched.update(("losses", "figures"))
            elif kind == "validation":
                m = e.get("metrics") or {}
                new = self.tables["validation"].append(e.get("iteration", math.nan),
                                                       {"dice": event_number(m.get("dice")),
                                                        "hd95": event_number(m.get("hd95"))})
                for col in new:
                    self._series(col, "validation", col)
                touched.add("validation")
        for name in touched:
            self.tables[name]._sync()
        return bool(touched)

    def column(self, table: str, name: str) -> np.ndarray:
        """A column of a table node as read back from the node (for the panel and the tests)."""
        arr = self.tables[table].node.GetTable().GetColumnByName(name)
        return np.array([]) if arr is None else numpy_support.vtk_to_numpy(arr).copy()


def _find_node(scene, class_name: str, key: str):
    """The node of ``class_name`` carrying ``NODE_ATTRIBUTE == key`` (re-attaching finds the same nodes)."""
    for i in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(i, class_name)
        if node.GetAttribute(NODE_ATTRIBUTE) == key:
            return node
    return None


# ----------------------------------------------------------------------------------------------------------------------
# overlays in the subject hierarchy
# ----------------------------------------------------------------------------------------------------------------------

def run_folder_item(scene, run_dir: PathLike, name: Optional[str] = None) -> int:
    """The subject-hierarchy folder of a run (found by its run folder, else made under the scene item)."""
    sh = scene.GetSubjectHierarchyNode()
    key = str(Path(run_dir).resolve())
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    for i in range(ids.GetNumberOfIds()):
        item = ids.GetId(i)
        if sh.GetItemAttribute(item, RUN_ATTRIBUTE) == key:
            return item
    item = sh.CreateFolderItem(sh.GetSceneItemID(), name or f"Training run {Path(run_dir).name}")
    sh.SetItemAttribute(item, RUN_ATTRIBUTE, key)
    return item


#: what a damaged overlay set's manifest raises (not JSON, a key missing, a wrong type, unreadable)
_DAMAGED_SET = (ValueError, KeyError, TypeError, OSError)


class OverlayLoader:
    """Loads overlay sets of a run into the scene (see the module docstring); the same nodes are updated by each
    newer set of a case. ``loaded[case]``: the manifest of the set shown."""

    def __init__(self, scene, run_dir: PathLike, name: Optional[str] = None):
        self.scene = scene
        self.run_dir = Path(run_dir)
        self.name = name
        self.loaded: Dict[str, Dict[str, Any]] = {}
        self.nodes: Dict[Tuple[str, str, Optional[int]], Any] = {}

    def _case_folder(self, case_id: str) -> int:
        sh = self.scene.GetSubjectHierarchyNode()
        run_item = run_folder_item(self.scene, self.run_dir, self.name)
        ids = vtk.vtkIdList()
        sh.GetItemChildren(run_item, ids, False)
        for i in range(ids.GetNumberOfIds()):
            item = ids.GetId(i)
            if sh.GetItemAttribute(item, "SemiSupSeg.OverlayCase") == case_id:
                return item
        item = sh.CreateFolderItem(run_item, f"{case_id} overlays")
        sh.SetItemAttribute(item, "SemiSupSeg.OverlayCase", case_id)
        return item

    def cases(self) -> List[str]:
        """Cases with at least one complete set in the run folder."""
        from semisupseg.training.snapshots import list_sets, read_manifest

        root = self.run_dir / "overlays"
        out = []
        if root.is_dir():
            for d in sorted(root.iterdir()):
                sets = list_sets(d)
                try:
                    if sets:
                        out.append(str(read_manifest(sets[-1])["case"]))
                except _DAMAGED_SET:  # a hand-edited or damaged manifest: that case is not listed
                    continue
        return out

    def load(self, case_id: str, force: bool = False) -> Optional[Dict[str, Any]]:
        """Load the newest set of ``case_id`` (nothing when it is the one shown, unless ``force``); returns its
        manifest, ``None`` when the run has none yet."""
        from semisupseg.training.snapshots import newest_set, read_manifest

        folder = newest_set(self.run_dir, case_id)
        if folder is None:
            return None
        shown = self.loaded.get(case_id)
        try:
            manifest = read_manifest(folder)
            manifest["iteration"], manifest["model"], manifest["files"]  # what loading needs
        except _DAMAGED_SET:  # a damaged set: the panel goes on (it raised out of every timer tick)
            return shown
        if shown is not None and shown["iteration"] == manifest["iteration"] and not force:
            return shown
        from semisupseg.io import read_volume

        sh = self.scene.GetSubjectHierarchyNode()
        parent = self._case_folder(case_id)
        for f in manifest["files"]:
            try:
                volume = read_volume(f["path"])
            except Exception:  # the set was pruned while we read it: the next poll loads a newer one
                return shown
            node = self._show(case_id, f, volume)
            node.SetAttribute("SemiSupSeg.Iteration", str(manifest["iteration"]))
            sh.SetItemParent(ensure_sh_item(self.scene, node), parent)
        sh.SetItemName(parent, f"{case_id} overlays (iteration {manifest['iteration']}, {manifest['model']})")
        self.loaded[case_id] = manifest
        return manifest

    def _show(self, case_id: str, f: Dict[str, Any], volume: Volume):
        kind, cls = f["kind"], f.get("class")
        key = (case_id, kind, cls)
        node_key = f"{self.run_dir.resolve()}|overlay|{case_id}|{kind}|{cls}"
        node = self.nodes.get(key)
        if node is None or self.scene.GetNodeByID(node.GetID()) is None:
            node = _find_node(self.scene, "vtkMRMLScalarVolumeNode", node_key)
        label = f" {f.get('class_name')}" if cls is not None else ""
        names = {"segmentation": "segmentation", "sdm": f"SDM{label} ({f.get('source', 'prediction')})",
                 "entropy": "entropy", "gt_sdm": f"SDM{label} (ground truth)", "ring": f"boundary ring{label}",
                 "regions": "SGRS regions"}
        name = f"{case_id} {names.get(kind, kind)}"
        if kind in ("sdm", "gt_sdm"):
            node = show_overlay(self.scene, volume.with_array(volume.array.astype(np.float32)), "sdm", name, node)
        elif kind == "entropy":
            node = show_overlay(self.scene, volume.with_array(volume.array.astype(np.float32)), "entropy", name, node,
                                value_range=(0.0, float(f.get("max") or max(float(volume.array.max()), 1e-6))))
        elif kind == "regions":
            node = show_overlay(self.scene, volume, "regions", name, node)
        elif kind == "segmentation":
            node = update_volume_node(self.scene, volume, node, name, labelmap=True,
                                      class_names=f["class_names"], label_values=f["label_values"])
        elif kind == "ring":
            node = update_volume_node(self.scene, volume.with_array(volume.array.astype(np.uint8)), node, name,
                                      labelmap=True, class_names=["outside", f"M_bound{label}"], label_values=[0, 1],
                                      colors=[(0, 0, 0), (1.0, 0.85, 0.0)])
        else:
            node = show_overlay(self.scene, volume.with_array(volume.array.astype(np.float32)), "probability",
                                name, node)
        node.SetAttribute(NODE_ATTRIBUTE, node_key)
        self.nodes[key] = node
        return node


# ----------------------------------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------------------------------

class TrainingMonitor:
    """Everything the panel shows of a run folder, refreshed by :meth:`poll` (see the module docstring).

    ``state`` keys: ``status`` (``running``/``finished``/``failed``/``cancelled``/``crashed``/``empty``),
    ``iteration``, ``max_iterations``, ``fraction``, ``eta_s``, ``lr``, ``loss``, ``method``, ``validation`` (last
    metrics), ``best_dice``, ``message`` (failure/cancel reason), ``line`` (one line for a status label)."""

    def __init__(self, scene, run_dir: PathLike, name: Optional[str] = None, load_overlays: bool = True):
        self.scene = scene
        self.run_dir = Path(run_dir)
        self.name = name or self.run_dir.name
        self.reader = EventLogReader(self.run_dir / "events.jsonl")
        self._summary = None  # semisupseg.training.heartbeat.LogSummary of the events read (made at the first poll)
        self.plots = TrainingPlots(scene, self.name, key=str(self.run_dir.resolve()))
        self.overlays = OverlayLoader(scene, self.run_dir, f"Training run {self.name}")
        self.load_overlays = load_overlays
        self.state: Dict[str, Any] = {"status": "empty", "iteration": None, "max_iterations": None,
                                      "fraction": 0.0, "eta_s": None, "lr": None, "loss": None, "method": None,
                                      "validation": None, "best_dice": None, "message": None, "line": ""}

    def poll(self) -> List[Dict[str, Any]]:
        """Read the new events, update plots, overlays and :attr:`state`; returns the new events."""
        from semisupseg.training.events import progress_line
        from semisupseg.training.heartbeat import LogSummary, run_state

        events = self.reader.read_new()
        if self.reader.restarted or self._summary is None:
            self._summary = LogSummary()
        if self.reader.restarted:
            self.plots.clear()
            self.state.update(validation=None, best_dice=None, message=None)
        self._summary.add(events)
        self.plots.add_events(events)
        cases = []
        for e in events:
            kind = e.get("event")
            if e.get("iteration") is not None:
                self.state["iteration"] = e["iteration"]
            if e.get("max_iterations"):
                self.state["max_iterations"] = e["max_iterations"]
            if kind in ("started", "resumed"):
                self.state["method"] = e.get("method", self.state["method"])
            elif kind == "iteration":
                self.state.update(eta_s=e.get("eta_s"), lr=e.get("lr"), loss=e.get("loss"))
            elif kind == "validation":
                m = e.get("metrics") or {}
                self.state["validation"] = m
                if isinstance(m.get("dice"), (int, float)):
                    best = self.state["best_dice"]
                    self.state["best_dice"] = m["dice"] if best is None else max(best, m["dice"])
            elif kind in ("failed", "cancelled"):
                self.state["message"] = e.get("message")
            elif kind == "overlays" and e.get("case") and not e.get("error"):
                cases.append(e["case"])
            line = progress_line(e)
            if line:
                self.state["line"] = line
        rs = run_state(self.run_dir, log=self._summary)  # the events read so far: the log is not read again
        self.state["status"] = rs.status
        if self.state["iteration"] is None:
            self.state["iteration"] = rs.iteration
        if self.state["max_iterations"] is None:
            self.state["max_iterations"] = rs.max_iterations
        total, it = self.state["max_iterations"], self.state["iteration"]
        self.state["fraction"] = min(1.0, it / total) if total and it is not None else 0.0
        if rs.status == "crashed":
            self.state["line"] = (f"crashed at iteration {it}: the training process is gone without a final "
                                  "event (resume it from the run folder)")
        if self.load_overlays:
            for case in dict.fromkeys(cases):
                self.overlays.load(case)
        return events

    def attach(self) -> List[Dict[str, Any]]:
        """Read the whole log of the run (re-attaching) and load the newest overlay set of each case."""
        events = self.poll()
        if self.load_overlays:
            for case in self.overlays.cases():
                self.overlays.load(case)
        return events
