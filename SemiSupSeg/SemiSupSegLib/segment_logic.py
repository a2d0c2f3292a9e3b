"""The whole *Segment* action, Qt-free: a volume node (+ optional markups ROI) → a segmentation node and overlays.

Flow of one run (:meth:`SegmentLogic.start` → :class:`SegmentJob`):

1. the model is resolved through the catalogue (``semisupseg.catalogue``: a shipped, user or run model name, or a
   path) and its card read (classes, label values, SDM head, the flips it was trained on);
2. the input node becomes a :class:`semisupseg.volume.Volume` (``SemiSupSegLib.scene.volume_from_node``: exact
   geometry, RAS→LPS, k,j,i = z,y,x); the ROI becomes a voxel box of it (``SemiSupSegLib.roi.roi_box_zyx``);
3. inference runs in the background in the warm worker (``SemiSupSegLib.runner.WorkerClient``: a ``semisupseg
   worker`` child of Slicer's Python that keeps models loaded; the volume goes over as a raw array plus geometry and
   the outputs come back the same way) — the Slicer process only converts and displays;
4. when the worker's result arrives (in :meth:`SegmentJob.poll`, i.e. the GUI thread's timer, or :meth:`SegmentJob.
   wait` in scripts and tests) the results enter the scene through ``SemiSupSegLib.results``: one segmentation node
   (a segment per class, names and colours from the card, reference geometry from the input, under the input's
   subject-hierarchy parent; a re-run updates the same node, but never one holding another scan's result or the
   user's own segments: :func:`output_segmentation_for`), and the overlays asked for as scalar volumes in the
   input's geometry (SDM per class, entropy, probability per class), each reused on the next run for the same input
   (results and input are linked by node references, :data:`SOURCE_ROLE`).

Nothing touches the scene before step 4, so a cancelled or failed run leaves the scene exactly as it was; the
temporary files (raw input and outputs) are removed whatever happens.

Options: ``device`` ``auto``/``cpu``/``cuda`` (:func:`device_note` explains a missing GPU); ``quality``
``"accurate"`` adds flip test-time augmentation over the flips the model was trained on (what ``semisupseg segment
--tta`` with no axis does, :func:`semisupseg.inference.tta_axes_for_model`), ``"default"`` none; ``keep_largest``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from SemiSupSegLib.parameters import DEVICES, OVERLAY_KINDS, QUALITIES, SegmentParameters
from SemiSupSegLib.runner import wait_until

#: attribute of an overlay volume naming what it shows (``"sdm:<class>"``, ``"entropy"``...): the next run for the
#: same input updates these nodes instead of piling up new ones
OVERLAY_ATTRIBUTE = "SemiSupSeg.OverlayKey"
#: node-reference roles linking results and their input (references follow their nodes when a scene is imported and
#: node IDs change, which an ID kept in an attribute would not): every result (segmentation, overlay) names its input
#: in SOURCE_ROLE, and the input lists its overlays in OVERLAYS_ROLE. An overlay counts as the input's only when
#: both agree, so a cloned overlay (the user's copy) or a cloned input is never written into.
SOURCE_ROLE = "SemiSupSegSource"
OVERLAYS_ROLE = "SemiSupSegOverlay"
#: worker output names of the overlay kinds (``results.show_overlay`` kinds → worker ``outputs``)
WORKER_OUTPUT = {"sdm": "sdm", "entropy": "entropy", "probability": "probabilities"}
#: ``info["sdm_source"]`` of an SDM computed from the segmentation (``semisupseg.inference.SDM_FROM_LABELS``; the
#: value is repeated here so this module imports without torch)
SDM_FROM_LABELS = "predicted segmentation"

ProgressCallback = Callable[[Optional[float], str, Optional[float]], None]
LogCallback = Callable[[str], None]


class SegmentError(RuntimeError):
    """A run failed: one line naming what and why (the worker's own message for input errors)."""


class SegmentCancelled(SegmentError):
    """The run was cancelled; the scene is unchanged."""


@dataclass
class SegmentRequest:
    """One *Segment* click: the input node, the model (catalogue name or path) and the panel's options (see
    :class:`SemiSupSegLib.parameters.SegmentParameters` for their meaning)."""

    input_node: Any
    model: str
    device: str = "auto"
    quality: str = "default"
    keep_largest: bool = False
    roi_node: Any = None
    overlays: Tuple[str, ...] = ("sdm", "entropy")
    output_segmentation: Any = None
    show_3d: bool = False

    def __post_init__(self) -> None:
        from semisupseg.errors import InputError

        self.overlays = tuple(self.overlays)
        if self.input_node is None:
            raise InputError("choose an input volume")
        if not self.model:
            raise InputError("choose a model")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise InputError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.quality not in QUALITIES:
            raise InputError(f"quality {self.quality!r} is not one of {', '.join(QUALITIES)}")
        unknown = [k for k in self.overlays if k not in OVERLAY_KINDS]
        if unknown:
            raise InputError(f"unknown overlay kind(s) {unknown}; known: {', '.join(OVERLAY_KINDS)}")

    @classmethod
    def from_parameters(cls, params: SegmentParameters) -> "SegmentRequest":
        return cls(input_node=params.input_volume, model=params.model, device=params.device, quality=params.quality,
                   keep_largest=params.keep_largest, roi_node=params.roi, overlays=params.overlays,
                   output_segmentation=params.output_segmentation, show_3d=params.show_3d)


@dataclass
class SegmentOutcome:
    """What a finished run put into the scene.

    * ``segmentation_node``; ``overlay_nodes``: ``{key: node}`` with keys ``"sdm:<class>"``, ``"entropy"``,
      ``"probability:<class>"`` (foreground classes of the card);
    * ``voxels``: voxels per class; ``timings``: the worker's (read/model/segment/write/total seconds);
      ``seconds``: from :meth:`SegmentLogic.start` to the nodes being in the scene; ``notes``: things the user
      should know (no GPU, no SDM head, no trained flips for "accurate").
    """

    segmentation_node: Any
    overlay_nodes: Dict[str, Any] = field(default_factory=dict)
    voxels: Dict[str, int] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)


def device_note(device: str, gpu_available: bool) -> Optional[str]:
    """A note for the panel: ``auto`` without a GPU runs on the CPU; ``cuda`` without one cannot run. ``None``
    when there is nothing to say."""
    if gpu_available:
        return None
    if device == "auto":
        return "no GPU found: runs on the CPU"
    if str(device).startswith("cuda"):
        return "no CUDA GPU found: choose auto or cpu"
    return None


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU in this process. The first answer with torch installed is kept (importing torch
    and asking CUDA costs seconds; the panel asks on every change); without torch ``False``, asked again next time."""
    global _GPU
    if _GPU is None:
        try:
            import torch
        except ImportError:
            return False
        _GPU = bool(torch.cuda.is_available())
    return _GPU


_GPU: Optional[bool] = None


def worker_options(request: SegmentRequest, card: Any, roi_box: Optional[Sequence[int]]) -> Tuple[Dict[str, Any],
                                                                                                   List[str]]:
    """The worker's ``options`` (``SegmentOptions`` fields) for ``request`` with a model of ``card``, and notes.

    ``roi_box``: ``(z0, z1, y0, y1, x0, x1)`` input voxels (stop exclusive) or ``None``.
    """
    from semisupseg.inference import tta_axes_for_model

    notes: List[str] = []
    if "sdm" in request.overlays and not card.network.get("sdm_head", False):
        notes.append("this model has no SDM head: the SDM overlay is the signed distance map of its segmentation")
    tta: Tuple[int, ...] = ()
    if request.quality == "accurate":
        tta, _ = tta_axes_for_model(card, None)
        if not tta:
            aug = (card.training or {}).get("augmentation", "papers")
            notes.append(f"the model was trained without flips (augmentation {aug!r}): 'accurate' is the same as "
                         "'default' for it")
    options: Dict[str, Any] = {"device": request.device, "keep_largest": bool(request.keep_largest),
                               "compute_sdm": "sdm" in request.overlays,
                               "compute_entropy": "entropy" in request.overlays, "tta_axes": list(tta)}
    if roi_box is not None:
        z0, z1, y0, y1, x0, x1 = (int(v) for v in roi_box)
        options["roi"] = [[z0, z1], [y0, y1], [x0, x1]]
    return options, notes


def worker_outputs(request: SegmentRequest, card: Any) -> List[str]:
    """The worker ``outputs`` for ``request``: labels always, then the overlays (every model gives an SDM: its
    head's, else its segmentation's)."""
    return ["labels"] + [WORKER_OUTPUT[k] for k in request.overlays]


def card_colors(card: Any) -> Optional[List[Tuple[float, float, float]]]:
    """Class colours from the card (``extra["class_colors"]``: one RGB triple in [0, 1] per class, background
    first), ``None`` when it has none (``SemiSupSegLib.colors`` picks them then)."""
    colors = (card.extra or {}).get("class_colors")
    if not colors or len(colors) != len(card.class_names):
        return None
    return [tuple(float(c) for c in rgb[:3]) for rgb in colors]  # type: ignore[misc]


def overlay_volumes(outputs: Dict[str, Any], card: Any) -> List[Tuple[str, str, Any]]:
    """Split the worker's output volumes into overlays: ``[(key, kind, Volume)]``; SDM and probabilities get one
    volume per foreground class (the worker gives ``(Z, Y, X)`` for a binary model, ``(C-1, Z, Y, X)`` else)."""
    out: List[Tuple[str, str, Any]] = []
    foreground = list(card.class_names[1:])
    for kind in OVERLAY_KINDS:
        volume = outputs.get(WORKER_OUTPUT[kind])
        if volume is None:
            continue
        if kind == "entropy":
            out.append(("entropy", kind, volume))
            continue
        arrays = [volume.array] if volume.array.ndim == 3 else list(volume.array)
        for name, array in zip(foreground, arrays):
            out.append((f"{kind}:{name}", kind, volume.with_array(array)))
    return out


def model_choices(catalogue: Any) -> List[Tuple[str, str, str]]:
    """The model selector's items: ``(label, name, card text)`` for every catalogue entry (shipped, user, run),
    the card text being ``semisupseg info``'s summary, or the reason the entry cannot be used. Before torch is
    installed (the cards are read with it) the models are still listed, with a note instead of their cards."""
    try:
        entries, note = catalogue.entries(), None
    except ImportError as exc:
        entries = catalogue.entries(read_cards=False)
        note = f"model card not readable yet ({exc}): click Segment to install the missing Python packages"
    out = []
    for entry in entries:
        if entry.card is not None:
            text = "\n".join(entry.card.summary_lines())
        elif entry.error or note is None:
            text = f"cannot be used: {entry.error or 'no model card'}"
        else:
            text = note
        out.append((f"{entry.name} ({entry.source})", entry.name, text))
    return out


def recommended_keep_largest(catalogue: Any, name: str) -> bool:
    """Whether model ``name``'s card recommends keeping the largest component per class (``card.inference``): the
    panel sets its checkbox to it when the model is chosen; ``False`` for an unknown or unreadable model."""
    try:
        card = catalogue.get(name).card
    except Exception:  # noqa: BLE001 - an unusable entry already says why in the model list
        return False
    return bool(((card.inference if card is not None else None) or {}).get("keep_largest", False))


def status_text(message: str, eta_s: Optional[float]) -> str:
    """The line under the progress bar: the step and the time left (``about 12 s left``)."""
    if eta_s is None or eta_s <= 0:
        return message
    left = f"{eta_s:.0f} s" if eta_s < 90 else f"{eta_s / 60:.0f} min"
    return f"{message} (about {left} left)" if message else f"about {left} left"


def overlay_name(input_name: str, key: str, sdm_source: Optional[str] = None) -> str:
    """``"<input> SDM <class>"``, ``"<input> entropy"``...; an SDM computed from the segmentation (``sdm_source``
    ``"predicted segmentation"``, the worker's ``info["sdm_source"]`` for a network without an SDM head) is named
    ``"<input> SDM of segmentation <class>"``, so it is not mistaken for a network's prediction."""
    kind, _, cls = key.partition(":")
    label = {"sdm": "SDM", "entropy": "entropy", "probability": "probability"}[kind]
    if kind == "sdm" and sdm_source == SDM_FROM_LABELS:
        label = "SDM of segmentation"
    return f"{input_name} {label}" + (f" {cls}" if cls else "")


def overlay_nodes_of(scene, input_node) -> List[Any]:
    """Every overlay node made for ``input_node`` (linked both ways, see :data:`OVERLAYS_ROLE`), in creation order
    (what the overlay selector lists)."""
    if input_node is None:
        return []
    out = []
    for i in range(input_node.GetNumberOfNodeReferences(OVERLAYS_ROLE)):
        node = input_node.GetNthNodeReference(OVERLAYS_ROLE, i)
        if node is not None and node.GetScene() is scene and node.GetAttribute(OVERLAY_ATTRIBUTE) and \
                node.GetNodeReference(SOURCE_ROLE) is input_node and node not in out:
            out.append(node)
    return out


def find_overlay_node(scene, input_node, key: str):
    """The overlay node an earlier run made for ``input_node`` and ``key`` (``None`` when there is none)."""
    return next((n for n in overlay_nodes_of(scene, input_node) if n.GetAttribute(OVERLAY_ATTRIBUTE) == key), None)


def link_result(input_node, node, overlay: bool = False) -> None:
    """Mark ``node`` as this module's result for ``input_node`` (and list it among the input's overlays)."""
    node.SetNodeReferenceID(SOURCE_ROLE, input_node.GetID())
    if overlay and not input_node.HasNodeReferenceID(OVERLAYS_ROLE, node.GetID()):
        input_node.AddNodeReferenceID(OVERLAYS_ROLE, node.GetID())


def output_segmentation_for(scene, input_node, node, class_names: Sequence[str]) -> Tuple[Any, Optional[str]]:
    """The segmentation node a run for ``input_node`` may write into: ``node`` (the panel's output) when that
    loses nothing — it is empty (e.g. the selector's "Create new"), or it is this module's segmentation of this very
    input holding only the model's classes (a re-run replaces it); else ``None`` (a new node is made) and a note
    saying why the chosen one was kept as it is (another scan's result, the user's own segments, gone from the
    scene)."""
    if node is None:
        return None, None
    name = node.GetName() or node.GetID()
    if node.GetScene() is not scene or scene.GetNodeByID(node.GetID()) is not node:
        return None, f"the output segmentation '{name}' left the scene during the run: the result is in a new one"
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not ids:
        return node, None
    source = node.GetNodeReference(SOURCE_ROLE)
    foreign = [segmentation.GetSegment(i).GetName() for i in ids if i not in list(class_names)[1:]]
    if source is input_node and not foreign:
        return node, None
    if foreign:
        why = "holds segments this module did not make (" + ", ".join(f"'{n}'" for n in foreign[:3]) + \
              (", ..." if len(foreign) > 3 else "") + ")"
    elif source is not None:
        why = f"is the segmentation of '{source.GetName()}'"
    else:
        why = "was not made by SemiSupSeg for this volume"
    return None, f"'{name}' {why}: it is kept as it is, and the result is in a new segmentation"


def overlay_items(scene, input_node) -> List[Tuple[str, str]]:
    """The overlay selector's items, ``(name, node ID)``: ``("None", "")``, then :func:`overlay_nodes_of`."""
    return [("None", "")] + [(node.GetName(), node.GetID()) for node in overlay_nodes_of(scene, input_node)]


def first_overlay_id(outcome: Any) -> str:
    """The node ID of the first overlay a finished run made (the one the panel shows), ``""`` when it made none."""
    nodes = list(outcome.overlay_nodes.values())
    return nodes[0].GetID() if nodes else ""


class SegmentJob:
    """One run started by :meth:`SegmentLogic.start`.

    ``state``: ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``; ``progress`` (0..1 or ``None``),
    ``message``, ``eta_s``; ``outcome`` (:class:`SegmentOutcome`) when done, ``error`` (one line) when failed.
    Call :meth:`poll` from the GUI timer (returns ``True`` once finished) or :meth:`wait` to block.
    """

    def __init__(self, logic: "SegmentLogic", request: SegmentRequest, card: Any, model_path: Path,
                 on_progress: Optional[ProgressCallback], on_log: Optional[LogCallback], notes: List[str],
                 t0: float):
        self.logic = logic
        self.request = request
        self.card = card
        self.model_path = model_path
        self.on_progress = on_progress
        self.on_log = on_log
        self.notes = notes
        self.state = "running"
        self.outcome: Optional[SegmentOutcome] = None
        self.error: Optional[str] = None
        self._t0 = t0
        self._handle: Any = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def progress(self) -> Optional[float]:
        return self._handle.progress if self._handle is not None else None

    @property
    def message(self) -> str:
        return self._handle.message if self._handle is not None else ""

    @property
    def eta_s(self) -> Optional[float]:
        return self._handle.eta_s if self._handle is not None else None

    def _on_event(self, event: Dict[str, Any]) -> None:
        if event.get("event") == "progress" and self.on_progress is not None:
            self.on_progress(self._handle.progress, self._handle.message, self._handle.eta_s)

    def poll(self) -> bool:
        """Take the worker's news; put the results into the scene when they arrived. ``True`` once finished."""
        if self.state != "running":
            return True
        self._handle.poll()
        if not self._handle.done:
            return False
        self._finish()
        return True

    def wait(self, timeout: Optional[float] = None) -> SegmentOutcome:
        """Block until the run ends; returns the outcome or raises :class:`SegmentError` /
        :class:`SegmentCancelled`. ``TimeoutError`` after ``timeout`` seconds (the run goes on: cancel it)."""
        wait_until(self.poll, lambda: time.sleep(0.02), timeout, "segmentation")
        return self.result()

    def result(self) -> SegmentOutcome:
        if self.state == "done":
            assert self.outcome is not None
            return self.outcome
        if self.state == "cancelled":
            raise SegmentCancelled("segmentation cancelled; the scene is unchanged")
        if self.state == "failed":
            raise SegmentError(self.error or "segmentation failed")
        raise SegmentError("segmentation is still running")

    def cancel(self, grace_s: float = 5.0, block: bool = False) -> None:
        """Ask the worker to stop this run (then kill it after ``grace_s`` seconds); the scene stays as it was.
        ``block=False`` (the GUI): :meth:`poll` finishes the job once the worker has answered."""
        if self.state != "running":
            return
        self._handle.cancel(grace_s=grace_s, block=block)
        if block:
            self.poll()

    def _finish(self) -> None:
        handle = self._handle
        try:
            if handle.cancelled or handle.error_kind == "cancelled":
                self.state = "cancelled"
                return
            if not self.logic._input_in_scene(self.request):  # the scene was closed (or the volume deleted)
                self.state = "cancelled"
                if self.on_log is not None:
                    self.on_log("note: the input volume left the scene before the result arrived (the scene was "
                                "closed?); nothing was added")
                return
            if handle.result is None:
                self.state = "failed"
                self.error = handle.error or "segmentation failed"
                if self.on_log is not None:
                    self.on_log(f"error: {self.error}")
                return
            try:
                self.outcome = self.logic._show(self.request, self.card, handle, self.notes)
            except Exception as exc:  # a scene error: report it like a worker error
                self.state = "failed"
                self.error = f"{type(exc).__name__}: {exc}"
                if self.on_log is not None:
                    self.on_log(f"error: {self.error}")
                return
            self.outcome.seconds = time.monotonic() - self._t0
            self.state = "done"
            if self.on_progress is not None:
                self.on_progress(1.0, "done", 0.0)
        finally:
            handle.cleanup()
            self.logic._job_ended(self)


class SegmentLogic:
    """The Segment action on a scene (Qt-free; see the module docstring).

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer).
        segmentations_logic: ``vtkSlicerSegmentationsModuleLogic`` (``slicer.modules.segmentations.logic()``).
        catalogue: a ``semisupseg.catalogue.ModelCatalogue`` (default: the user's, ``SEMISUPSEG_HOME`` or
            ``~/.semisupseg``).
        worker: a ``SemiSupSegLib.runner.WorkerClient`` to use (default: one made on first use and kept warm until
            :meth:`close`); ``worker_threads``: torch threads of the worker it makes (``None``: torch's default).
    """

    def __init__(self, scene, segmentations_logic, catalogue: Any = None, worker: Any = None,
                 worker_threads: Optional[int] = None):
        self.scene = scene
        self.segmentations_logic = segmentations_logic
        self._catalogue = catalogue
        self._worker = worker
        self._owns_worker = worker is None
        self.worker_threads = worker_threads
        self.job: Optional[SegmentJob] = None
        self._preload: Any = None
        # closing the scene (File > Close Scene) stops a running job: its input goes with the scene
        self._close_observer = scene.AddObserver(scene.StartCloseEvent, self._on_scene_close) \
            if hasattr(scene, "AddObserver") else None

    def _on_scene_close(self, *unused: Any) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel(grace_s=5.0, block=False)

    def _input_in_scene(self, request: SegmentRequest) -> bool:
        node = request.input_node
        return node is not None and node.GetScene() is self.scene and \
            self.scene.GetNodeByID(node.GetID()) is node

    @property
    def catalogue(self):
        if self._catalogue is None:
            from semisupseg.catalogue import ModelCatalogue

            self._catalogue = ModelCatalogue()
        return self._catalogue

    @property
    def worker(self):
        if self._worker is None:
            from SemiSupSegLib.runner import WorkerClient

            self._worker = WorkerClient(threads=self.worker_threads)
        return self._worker

    def warm_up(self, model: Optional[str] = None) -> None:
        """Start the worker now without waiting for it (it imports torch: seconds) and load ``model`` (catalogue
        name or path) into it, so that the first click costs only the inference. Never raises: an unknown model or
        a worker that cannot start is reported by the next :meth:`start`."""
        from semisupseg.errors import InputError

        self.worker.start(wait=False)
        if not model:
            return
        try:
            path = self.catalogue.resolve(model)
        except InputError:
            return
        if self._preload is not None:
            self._preload.poll()
        self._preload = self.worker.preload(path)

    def close(self) -> None:
        """Cancel a running job and stop the worker this logic made."""
        if self._close_observer is not None:
            self.scene.RemoveObserver(self._close_observer)
            self._close_observer = None
        if self.job is not None and self.job.running:
            self.job.cancel(grace_s=1.0, block=True)
        if self._worker is not None and self._owns_worker:
            self._worker.close()
            self._worker = None

    # ------------------------------------------------------------------------------------------------ the action
    def start(self, request: SegmentRequest, on_progress: Optional[ProgressCallback] = None,
              on_log: Optional[LogCallback] = None) -> SegmentJob:
        """Start segmenting in the background; returns at once with the :class:`SegmentJob`.

        Raises ``InputError`` (one line) for a bad request before anything runs: unknown model, unreadable card,
        empty ROI, a job already running, an input that is no 3D scan to segment (not in the scene, a label map,
        NaN/Inf voxels, constant, one slice).
        """
        from semisupseg.checkpoint import read_card
        from semisupseg.errors import InputError
        from semisupseg.io import check_scan
        from SemiSupSegLib.scene import volume_from_node

        t0 = time.monotonic()
        if self.job is not None and self.job.running:
            raise InputError("a segmentation is already running: wait for it or cancel it")
        model_path = Path(self.catalogue.resolve(request.model))
        card = read_card(model_path)
        node = request.input_node
        if node is not None and not self._input_in_scene(request):
            raise InputError(f"volume '{node.GetName()}' is not in the scene")
        if node is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"'{node.GetName()}' is a label map, not a scan: choose the image to segment")
        volume = volume_from_node(node)  # first: an ROI is only checked against a usable scan
        check_scan(volume, f"volume '{request.input_node.GetName()}'")  # NaN, constant, one slice: refused here
        roi_box = None
        if request.roi_node is not None:
            from SemiSupSegLib.roi import roi_box_zyx

            roi_box = roi_box_zyx(request.roi_node, request.input_node)
        options, notes = worker_options(request, card, roi_box)
        job = SegmentJob(self, request, card, model_path, on_progress, on_log, notes, t0)
        for note in notes:
            if on_log is not None:
                on_log(f"note: {note}")
        job._handle = self.worker.segment(volume, model_path, outputs=worker_outputs(request, card),
                                          options=options, on_event=job._on_event)
        self.job = job
        return job

    def segment(self, request: SegmentRequest, timeout: Optional[float] = None,
                on_progress: Optional[ProgressCallback] = None, on_log: Optional[LogCallback] = None
                ) -> SegmentOutcome:
        """Blocking mode (scripts, tests): :meth:`start` then :meth:`SegmentJob.wait`."""
        return self.start(request, on_progress=on_progress, on_log=on_log).wait(timeout=timeout)

    def _job_ended(self, job: SegmentJob) -> None:
        if self.job is job:
            self.job = None

    # ------------------------------------------------------------------------------------------------ results
    def _show(self, request: SegmentRequest, card: Any, handle: Any, notes: List[str]) -> SegmentOutcome:
        """Put a finished worker result into the scene (the only step that changes it)."""
        from SemiSupSegLib import results

        volumes = handle.volumes()
        input_node = request.input_node
        input_name = input_node.GetName() or "volume"
        output, note = output_segmentation_for(self.scene, input_node, request.output_segmentation,
                                               list(card.class_names))
        if note:
            notes.append(note)
        seg_node = results.show_segmentation(
            self.scene, self.segmentations_logic, volumes["labels"], list(card.class_names),
            list(card.label_values), colors=card_colors(card), reference_node=input_node, segmentation_node=output,
            # a re-run keeps the name the user may have given the result; a new or empty node gets the input's
            name=None if output is not None and output.GetNodeReference(SOURCE_ROLE) is input_node
            else f"{input_name} segmentation",
            closed_surface=bool(request.show_3d), subject_hierarchy_parent_of=input_node)
        link_result(input_node, seg_node)
        overlays: Dict[str, Any] = {}
        result = handle.result or {}
        sdm_source = (result.get("info") or {}).get("sdm_source")
        for key, kind, volume in overlay_volumes(volumes, card):
            node = find_overlay_node(self.scene, input_node, key)
            node = results.show_overlay(self.scene, volume, kind, overlay_name(input_name, key, sdm_source),
                                        node=node, reference_node=input_node)
            node.SetAttribute(OVERLAY_ATTRIBUTE, key)
            link_result(input_node, node, overlay=True)
            overlays[key] = node
        return SegmentOutcome(segmentation_node=seg_node, overlay_nodes=overlays,
                              voxels={str(k): int(v) for k, v in (result.get("voxels") or {}).items()},
                              timings={str(k): float(v) for k, v in (result.get("timings") or {}).items()},
                              notes=list(notes))
