"""A warm segmentation worker: one long-lived process that keeps models loaded and answers JSON-line requests.

A fresh ``semisupseg segment`` process pays for importing torch and the package, loading the model and the first
forward pass's one-off set-up (oneDNN primitives, the fast path's bf16 check) on every click. The worker pays them
once: the Slicer module starts it in the background (``python -m semisupseg worker``, see
``SemiSupSegLib.runner.WorkerClient``) and sends it requests; all the algorithm stays in
:func:`semisupseg.inference.segment`.

Protocol (UTF-8, one JSON object per line; requests on stdin, events on stdout, free text on stderr)
---------------------------------------------------------------------------------------------------
At start the worker prints ``{"event": "ready", "pid": int, "version": str}``. Requests carry an ``op`` and an
optional ``id`` (any JSON value, echoed in every event of that request); they are handled one at a time, in order:

* ``{"op": "ping", "id": ...}`` → ``{"event": "pong", "id": ..., "pid": int, "cached_models": [path, ...]}``
* ``{"op": "segment", "id": ..., "input": PATH, "model": PATH_OR_NAME, "output_dir": DIR, ...}``; optional keys:

  - ``"geometry"``: required when ``input`` is a raw ``.npy`` array (z, y, x, any numeric dtype):
    ``{"spacing": [x, y, z] mm, "origin": [x, y, z] mm LPS, "direction": 9 numbers row-major (ITK/LPS)}``;
    any other ``input`` is a volume file read with :func:`semisupseg.io.read_image_or_h5` (NIfTI, NRRD, MHA,
    DICOM folder, LA ``.h5`` at ``h5_spacing``, default 0.625 mm);
  - ``"outputs"``: any of ``labels`` (always written), ``probabilities``, ``sdm``, ``entropy`` (default
    ``["labels"]``); probabilities and SDM are the **foreground** classes as ``semisupseg segment`` writes them
    (``(Z, Y, X)`` for a binary model, else ``(C-1, Z, Y, X)``, component ``i`` = class ``i + 1``); the SDM is the
    network's SDM head, or the SDM of the predicted segmentation for a model without one (the result's
    ``info["sdm_source"]`` says which);
  - ``"format"``: ``"npy"`` (default, the fastest: raw arrays ``<output>.npy`` whose geometry is the input's, given
    in the result) or a volume suffix (``.nrrd``, ``.nii.gz``, ``.nii``, ``.mha``, ``.seg.nrrd`` for the labels);
  - ``"options"``: fields of :class:`semisupseg.inference.SegmentOptions` (``tta_axes`` z, y, x numbering;
    ``roi`` as ``[[z0, z1], [y0, y1], [x0, x1]]`` input voxels, stop exclusive);
  - ``"stop_file"``: cancel this request (and only it) when the file appears; ``"overwrite"``: replace existing
    outputs (default: refuse).

  Events: ``{"event": "started"}``, ``{"event": "progress", "fraction": f, "message": str}``, then either
  ``{"event": "result", "outputs": {kind: path}, "geometry": {...}, "class_names": [...], "label_values": [...],
  "voxels": {class: count}, "info": {...}, "timings": {"read_s", "model_s", "segment_s", "write_s", "total_s"},
  "model_cached": bool}`` or ``{"event": "error", "error": "one line naming the file and the problem",
  "kind": "input" | "cancelled" | "internal"}``. The worker stays alive after an error.
* ``{"op": "load", "id": ..., "model": PATH_OR_NAME}`` → ``{"event": "loaded", "id": ..., "path": str,
  "model_cached": bool, "seconds": float}``: load a model into the cache ahead of the first request (or an
  ``error`` event naming the file).
* ``{"op": "shutdown", "id": ...}`` → ``{"event": "bye", "id": ...}``; the worker exits. It also exits when stdin
  closes (so it never outlives the process that started it) and stops a running request when its parent process
  goes away.

Models are cached by (absolute path, modification time, size), least recently used first out (``cache_size``,
default 2): a changed file is loaded again.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Tuple

import numpy as np

from semisupseg import __version__
from semisupseg.errors import Cancelled, InputError, SemiSupSegError
from semisupseg.volume import Volume

#: outputs a segment request may ask for
OUTPUT_KINDS = ("labels", "probabilities", "sdm", "entropy")
#: ``format`` values besides ``"npy"``
VOLUME_FORMATS = (".nrrd", ".nii.gz", ".nii", ".mha", ".seg.nrrd")

__all__ = ["Worker", "geometry_of", "volume_from_npy", "save_volume_npy", "OUTPUT_KINDS", "VOLUME_FORMATS"]


# ----------------------------------------------------------------------------------------------------------------------
# Raw array + geometry (the fast exchange format)
# ----------------------------------------------------------------------------------------------------------------------

def geometry_of(volume: Volume) -> Dict[str, Any]:
    """``{"spacing": [x, y, z], "origin": [x, y, z], "direction": [9 row-major], "shape_zyx": [z, y, x]}`` (LPS)."""
    return {"spacing": [float(s) for s in volume.spacing], "origin": [float(o) for o in volume.origin],
            "direction": [float(d) for d in np.asarray(volume.direction).reshape(-1)],
            "shape_zyx": [int(s) for s in volume.shape_zyx]}


def volume_from_npy(path: os.PathLike, geometry: Mapping[str, Any], mmap: bool = False) -> Volume:
    """A :class:`Volume` from a raw ``.npy`` array (z, y, x or c, z, y, x; never unpickled) and a geometry dict
    (:func:`geometry_of`). Bad files or geometry raise :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("input array not found", path)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read as a .npy array: {exc}", path) from None
    try:
        vol = Volume(array, tuple(geometry["spacing"]), tuple(geometry["origin"]),
                     np.asarray(geometry.get("direction", np.eye(3).reshape(-1)), dtype=np.float64).reshape(3, 3),
                     str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"bad geometry {dict(geometry)!r} for this array of shape {array.shape}: {exc}", path) \
            from None
    shape = geometry.get("shape_zyx")
    if shape is not None and list(vol.shape_zyx) != [int(s) for s in shape]:
        raise InputError(f"array shape (z, y, x) {vol.shape_zyx} differs from the geometry's {list(shape)}", path)
    return vol


def save_volume_npy(array: np.ndarray, path: os.PathLike, overwrite: bool = False) -> Path:
    """Write ``array`` as ``path`` (``.npy``) atomically; refuses to replace a file unless ``overwrite``."""
    from semisupseg.fileio import atomic_path

    path = Path(path)
    with atomic_path(path, overwrite, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


class Worker:
    """Handles protocol requests (see the module docstring), writing events to ``out`` (a text stream).

    ``cache_size``: models kept loaded. Single-threaded: :meth:`serve` reads requests one at a time.
    """

    def __init__(self, out: IO[str], cache_size: int = 2):
        self.out = out
        self.cache_size = max(1, int(cache_size))
        self._models: "collections.OrderedDict[Tuple[str, int, int], Tuple[Any, Any]]" = collections.OrderedDict()
        self._parent = os.getppid()

    # ---------------------------------------------------------------------------------------------- events
    def emit(self, event: str, request_id: Any = None, **fields: Any) -> None:
        record = {"event": event}
        if request_id is not None:
            record["id"] = request_id
        record.update(fields)
        self.out.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self.out.flush()

    # ---------------------------------------------------------------------------------------------- models
    def model(self, name_or_path: str) -> Tuple[Any, Any, bool]:
        """``(model, card, was_cached)`` for a model file or catalogue name, from the cache when the file is
        unchanged."""
        from semisupseg.catalogue import resolve_model
        from semisupseg.checkpoint import load_model

        path = resolve_model(name_or_path)
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key in self._models:
            self._models.move_to_end(key)
            model, card = self._models[key]
            return model, card, True
        for old in [k for k in self._models if k[0] == key[0]]:  # the file changed: drop the stale one
            del self._models[old]
        model, card = load_model(path, device="cpu")
        self._models[key] = (model, card)
        while len(self._models) > self.cache_size:
            self._models.popitem(last=False)
        return model, card, False

    @property
    def cached_models(self) -> List[str]:
        return [k[0] for k in self._models]

    # ---------------------------------------------------------------------------------------------- requests
    def serve(self, inp: IO[str]) -> int:
        """Announce ``ready``, then handle request lines until ``shutdown`` or the end of ``inp``; returns 0."""
        self.emit("ready", pid=os.getpid(), version=__version__)
        for line in inp:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request must be a JSON object")
            except ValueError as exc:
                self.emit("error", None, error=f"bad request line ({exc}): {line[:200]}", kind="input")
                continue
            if not self.handle(request):
                break
        return 0

    def handle(self, request: Mapping[str, Any]) -> bool:
        """Handle one request; ``False`` when the worker should exit."""
        rid = request.get("id")
        op = request.get("op")
        if op == "ping":
            self.emit("pong", rid, pid=os.getpid(), cached_models=self.cached_models)
            return True
        if op == "shutdown":
            self.emit("bye", rid)
            return False
        if op in ("segment", "load"):
            try:
                if op == "segment":
                    self.segment(request)
                else:
                    t0 = time.perf_counter()
                    if not request.get("model"):
                        raise InputError("the request has no 'model'")
                    _, _, cached = self.model(str(request["model"]))
                    self.emit("loaded", rid, path=self.cached_models[-1], model_cached=cached,
                              seconds=round(time.perf_counter() - t0, 4))
            except Cancelled as exc:
                self.emit("error", rid, error=str(exc), kind="cancelled")
            except SemiSupSegError as exc:
                self.emit("error", rid, error=str(exc), kind="input")
            except Exception as exc:  # noqa: BLE001 - reported, the worker stays alive for the next request
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                self.emit("error", rid, error=f"{type(exc).__name__}: {exc}".splitlines()[0], kind="internal")
            return True
        self.emit("error", rid, error=f"unknown op {op!r} (ping, load, segment, shutdown)", kind="input")
        return True

    def _read_input(self, request: Mapping[str, Any]) -> Volume:
        from semisupseg.io import read_image_or_h5

        src = request.get("input")
        if not isinstance(src, str) or not src:
            raise InputError("the request has no 'input' path")
        path = Path(src)
        if path.suffix.lower() == ".npy":
            geometry = request.get("geometry")
            if not isinstance(geometry, Mapping):
                raise InputError("a .npy input needs the request's 'geometry' (spacing, origin, direction)", path)
            return volume_from_npy(path, geometry)
        if not path.exists():
            raise InputError("input not found", path)
        spacing = request.get("h5_spacing", 0.625)
        spacing = (float(spacing),) * 3 if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
        return read_image_or_h5(path, h5_spacing=spacing)

    @staticmethod
    def _options(request: Mapping[str, Any], outputs: List[str]) -> Any:
        from semisupseg.inference import SegmentOptions

        opts = dict(request.get("options") or {})
        opts.setdefault("compute_sdm", "sdm" in outputs)
        opts.setdefault("compute_entropy", "entropy" in outputs)
        if opts.get("roi") is not None:
            opts["roi"] = tuple(tuple(int(v) for v in pair) for pair in opts["roi"])
        if opts.get("tta_axes") is not None:
            opts["tta_axes"] = tuple(int(a) for a in opts["tta_axes"])
        try:
            return SegmentOptions(**opts)
        except TypeError as exc:
            raise InputError(f"bad segment options {opts}: {exc}") from None

    def segment(self, request: Mapping[str, Any]) -> None:
        from semisupseg.inference import segment
        from semisupseg.io import write_segmentation, write_volume
        from semisupseg.progress import CancelToken

        rid = request.get("id")
        t0 = time.perf_counter()
        outputs = list(request.get("outputs") or ["labels"])
        bad = [o for o in outputs if o not in OUTPUT_KINDS]
        if bad:
            raise InputError(f"unknown outputs {bad}; choose from {list(OUTPUT_KINDS)}")
        if "labels" not in outputs:
            outputs.insert(0, "labels")
        fmt = request.get("format", "npy")
        if fmt != "npy" and fmt not in VOLUME_FORMATS:
            raise InputError(f"unknown format {fmt!r}; 'npy' or one of {list(VOLUME_FORMATS)}")
        if not request.get("output_dir"):
            raise InputError("the request has no 'output_dir'")
        outdir = Path(request["output_dir"])
        if outdir.exists() and not outdir.is_dir():
            raise InputError("output exists and is not a folder", outdir)
        if not request.get("model"):
            raise InputError("the request has no 'model'")
        overwrite = bool(request.get("overwrite", False))
        map_suffix = ".nrrd" if fmt == ".seg.nrrd" else fmt
        paths = {k: outdir / (f"{k}.npy" if fmt == "npy" else f"{k}{fmt if k == 'labels' else map_suffix}")
                 for k in outputs}
        if not overwrite:
            from semisupseg.errors import OutputExistsError

            for p in paths.values():
                if p.exists():
                    raise OutputExistsError("output exists; the request must say overwrite to replace it", p)
        self.emit("started", rid)
        volume = self._read_input(request)
        t_read = time.perf_counter()
        model, card, cached = self.model(str(request["model"]))
        t_model = time.perf_counter()
        options = self._options(request, outputs)
        cancel = CancelToken(request.get("stop_file"))
        parent = self._parent

        def progress(fraction: float, message: str = "") -> None:
            if os.name == "posix" and os.getppid() != parent:  # the client went away: stop working for nobody
                cancel.cancel()
            self.emit("progress", rid, fraction=round(float(fraction), 4), message=message)

        cancel.raise_if_cancelled("segmentation")
        result = segment(volume, model, card, options, progress=progress, cancel=cancel)
        t_seg = time.perf_counter()
        outdir.mkdir(parents=True, exist_ok=True)
        arrays = {"labels": result.labels}
        if "probabilities" in outputs:
            fg = result.probabilities.array[1:]
            arrays["probabilities"] = result.probabilities.with_array(fg[0] if len(fg) == 1 else fg)
        if "sdm" in outputs and result.sdm is not None:
            sdm = result.sdm.array
            arrays["sdm"] = result.sdm.with_array(sdm[0] if len(sdm) == 1 else sdm)
        if "entropy" in outputs and result.entropy is not None:
            arrays["entropy"] = result.entropy
        written = {}
        for kind, vol in arrays.items():
            if fmt == "npy":
                written[kind] = save_volume_npy(vol.array, paths[kind], overwrite=overwrite)
            elif kind == "labels":
                written[kind] = write_segmentation(vol, paths[kind], class_names=card.class_names,
                                                   label_values=card.label_values, overwrite=overwrite)
            else:
                written[kind] = write_volume(vol, paths[kind], overwrite=overwrite, compress=False)
        t_end = time.perf_counter()
        counts = {card.class_names[i]: int(np.count_nonzero(result.labels.array == v))
                  for i, v in enumerate(card.label_values) if i > 0}
        self.emit("result", rid, outputs={k: str(v) for k, v in written.items()},
                  geometry=geometry_of(result.labels), class_names=list(card.class_names),
                  label_values=list(card.label_values), voxels=counts, info=result.info, model_cached=cached,
                  timings={"read_s": round(t_read - t0, 4), "model_s": round(t_model - t_read, 4),
                           "segment_s": round(t_seg - t_model, 4), "write_s": round(t_end - t_seg, 4),
                           "total_s": round(t_end - t0, 4)})


def protect_stdout() -> IO[str]:
    """Keep the process's stdout for protocol lines only: return a stream on a duplicate of file descriptor 1 and
    point descriptor 1 (and ``sys.stdout``) at stderr, so stray prints of any library never corrupt the protocol."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)
