"""Training snapshots: what the current model makes of chosen cases, as volumes in the cases' own geometry.

Every ``overlays.every`` iterations (and at the last one) the engine calls :meth:`SnapshotWriter.write` with the
current model — the EMA teacher where the method has one (it makes the pseudo labels and is the smoother of the two),
else the student. For each case of ``overlays.cases`` it writes one set::

    RUN_DIR/overlays/<case>/it<NNNNNN>/
        manifest.json          what is in the set (kinds, classes, sources), written with the set
        segmentation.nii.gz    predicted labels (the classes' label values)
        sdm_c<k>.nii.gz        signed distance map of foreground class k (negative inside): the SDM head's output
                               where the model has one, else the SDM of the predicted segmentation
        entropy.nii.gz         voxel entropy of the predicted class probabilities (nats)
      labeled and validation cases:
        gt_sdm_c<k>.nii.gz     SDM of the ground truth (the target of the SDM heads)
        ring_c<k>.nii.gz       the boundary ring M_bound of the boundary-aware loss around the ground truth (0/1)
      unlabeled cases:
        regions.nii.gz         SGRS-Net's regions: 1 = Δ uncertain, 2 = Ω confident and agreeing, 3 = Θ confident
                               and disagreeing (``semisupseg.geometry.REGION_*``)

Every volume has exactly the geometry of the case's image file (size, spacing, origin, direction). The predictions
come from :func:`semisupseg.inference.segment` — the function ``semisupseg segment`` runs, so an overlay shows what
segmenting the case with the current model gives. Maps defined on the training grid (the ring, which the loss
draws in voxels of that grid; the regions, partitioned where the model predicts) are computed there and resampled
back (nearest), as ``segment`` brings its outputs back. The SDMs of masks (ground truth; prediction without an SDM
head) are computed on the file's grid with its spacing (:func:`semisupseg.geometry.class_sdm`), which on an
isotropic training grid is the map training regresses. The ring's width is eq. 8 of the boundary-aware paper with
``A_whole`` = one training patch (:func:`semisupseg.geometry.boundary_ring`), the width training gives the object.
The regions: ``sgrs`` partitions with its own rule (:meth:`semisupseg.methods.sgrs.SGRS.regions`: its τ, entropy
base and MixUp view); every other method's model gets the same partition with SGRS-Net's default parameters, so
methods can be compared on one footing.

A set is written into a hidden temporary folder and renamed into place when complete: a reader sees a whole set
or none. The newest ``overlays.keep`` sets of each case are kept. Each set is announced by an ``overlays`` event
(``case``, ``role``, ``dir``, ``files``: kind, path, class).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from semisupseg.errors import InputError
from semisupseg.volume import Volume

#: roles a snapshot case can have in the run
LABELED_ROLES = ("labeled", "validation")
SET_PREFIX = "it"
MANIFEST = "manifest.json"


def case_folder_name(case_id: str) -> str:
    """A case id as a folder name (ids of extra unlabeled folders read ``folder/id``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def set_name(iteration: int) -> str:
    """``it000120``: the folder of the set written at ``iteration`` (sorts by iteration)."""
    return f"{SET_PREFIX}{int(iteration):06d}"


def list_sets(case_dir: Path) -> List[Path]:
    """The complete sets of one case folder, oldest first."""
    if not case_dir.is_dir():
        return []
    return sorted(p for p in case_dir.iterdir()
                  if p.is_dir() and re.fullmatch(rf"{SET_PREFIX}\d+", p.name) and (p / MANIFEST).is_file())


def newest_set(run_dir: Path, case_id: str) -> Optional[Path]:
    """The newest complete set of ``case_id`` in the run, or ``None``."""
    from semisupseg.training.heartbeat import OVERLAY_DIR

    sets = list_sets(Path(run_dir) / OVERLAY_DIR / case_folder_name(case_id))
    return sets[-1] if sets else None


def read_manifest(set_dir: Path) -> Dict[str, Any]:
    """The manifest of a set, file names made absolute."""
    data = json.loads((Path(set_dir) / MANIFEST).read_text(encoding="utf-8"))
    for f in data.get("files", []):
        f["path"] = str(Path(set_dir) / f["file"])
    return data


@dataclass
class _Case:
    """A snapshot case, read once: its image file (the reference geometry), the image on the training grid, and
    the maps that do not change during training (from the ground truth)."""

    case_id: str
    role: str
    image: Volume
    on_grid: Volume
    gt_maps: List[Tuple[Dict[str, Any], Volume]]


class SnapshotWriter:
    """Writes snapshot sets for the run's chosen cases (see the module docstring).

    Args:
        run_dir: the run folder.
        cases: case id -> (role, :class:`semisupseg.data.Case`) for each snapshot case.
        class_names / label_values: the classes (background first).
        normalization / spacing_xyz / patch_size_zyx: the training grid and preprocessing (the model card's).
        keep: sets kept per case; w_max: ``W_max`` of the ring (eq. 8); h5_spacing: voxel size of ``.h5`` files.
    """

    def __init__(self, run_dir: Path, cases: Dict[str, Tuple[str, Any]], class_names: Sequence[str],
                 label_values: Sequence[int], normalization: Dict[str, Any], spacing_xyz: Sequence[float],
                 patch_size_zyx: Sequence[int], keep: int = 3, w_max: Optional[int] = None,
                 h5_spacing: Sequence[float] = (0.625, 0.625, 0.625)):
        from semisupseg.data.cases import ClassInfo
        from semisupseg.losses.shape import W_MAX

        from semisupseg.training.heartbeat import OVERLAY_DIR

        self.root = Path(run_dir) / OVERLAY_DIR
        self.cases_in = dict(cases)
        self.classes = ClassInfo(list(class_names), list(label_values))
        self.normalization = dict(normalization)
        self.spacing_xyz = tuple(float(s) for s in spacing_xyz)
        self.patch_size_zyx = tuple(int(s) for s in patch_size_zyx)
        self.keep = int(keep)
        self.w_max = int(W_MAX if w_max is None else w_max)
        self.h5_spacing = tuple(float(s) for s in h5_spacing)
        self._cases: Dict[str, _Case] = {}

    # ------------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def resolve(case_ids: Sequence[str], sources: Dict[str, Any], labeled: Sequence[str], validation: Sequence[str]
                ) -> Dict[str, Tuple[str, Any]]:
        """``case id -> (role, Case)`` for the requested ids; an id that is not a case of the run (or whose files
        are unknown, data given as arrays) raises :class:`InputError` listing the run's cases."""
        out: Dict[str, Tuple[str, Any]] = {}
        for cid in case_ids:
            cid = str(cid)
            if cid not in sources:
                known = sorted(sources)
                hint = (f"cases of this run: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''}"
                        if known else "the run's data was given as arrays, without files")
                raise InputError(f"overlay case {cid!r} is not a case of this run ({hint})")
            role = "labeled" if cid in set(labeled) else "validation" if cid in set(validation) else "unlabeled"
            out[cid] = (role, sources[cid])
        return out

    def _prepare(self, cid: str) -> _Case:
        """Read the case (the same reader and checks as training) and compute its ground-truth maps once."""
        from semisupseg.data.cases import read_case
        from semisupseg.data.preprocess import PreprocessConfig, preprocess_image, resample_like, resample_volume
        from semisupseg.geometry import boundary_ring, class_sdm, ring_iterations

        role, case = self.cases_in[cid]
        labeled = role in LABELED_ROLES
        image, label = read_case(case, self.classes, with_label=labeled, h5_spacing=self.h5_spacing)
        pre = PreprocessConfig(normalization=self.normalization, spacing_xyz=self.spacing_xyz)
        on_grid = preprocess_image(image, pre)
        maps: List[Tuple[Dict[str, Any], Volume]] = []
        if labeled and label is not None:
            ref = _reference(image)
            idx = self.classes.to_indices(label.array, case.label_path)
            n = self.classes.num_classes
            sdm = np.asarray(class_sdm(idx, n, spacing=image.spacing_zyx), dtype=np.float32)
            idx_grid = resample_volume(label.with_array(idx), self.spacing_xyz, is_label=True)
            whole = int(np.prod(self.patch_size_zyx))
            for c in range(1, n):
                info = self._class_info(c)
                maps.append((dict(info, kind="gt_sdm", file=f"gt_sdm_c{c}.nii.gz", source="ground truth"),
                             ref.with_array(sdm[c - 1])))
                mask = idx_grid.array == c
                ring = np.asarray(boundary_ring(mask, self.w_max, whole).ring, dtype=np.uint8) if mask.any() else \
                    np.zeros(mask.shape, np.uint8)
                back = resample_like(idx_grid.with_array(ring), ref, is_label=True)
                maps.append((dict(info, kind="ring", file=f"ring_c{c}.nii.gz", source="ground truth",
                                  width_voxels=ring_iterations(mask, self.w_max, whole) if mask.any() else 0,
                                  w_max=self.w_max),
                             ref.with_array(back.array.astype(np.uint8))))
        return _Case(cid, role, image, on_grid, maps)

    def _class_info(self, c: int) -> Dict[str, Any]:
        return {"class": c, "class_name": self.classes.names[c], "label_value": self.classes.label_values[c]}

    def prepare(self) -> None:
        """Read every snapshot case now (so a bad file stops the run at its start, not hours later)."""
        for cid in self.cases_in:
            if cid not in self._cases:
                self._cases[cid] = self._prepare(cid)

    # ------------------------------------------------------------------------------------------------ one set
    def write(self, iteration: int, model, card, method, ctx, device: str = "cpu", fast: bool = False,
              model_name: str = "student", cancel=None) -> List[Dict[str, Any]]:
        """Write one set per case for ``iteration`` with ``model`` (``card``: its model card; ``method``: the run's
        method, for its region rule; ``ctx``: a :class:`semisupseg.methods.StepContext`). Returns one event dict
        (without the ``event`` key) per case."""
        self.prepare()
        out = []
        for cid in self.cases_in:
            t0 = time.perf_counter()
            folder, files = self._write_case(self._cases[cid], iteration, model, card, method, ctx, device, fast,
                                             model_name, cancel)
            out.append({"iteration": int(iteration), "case": cid, "role": self._cases[cid].role,
                        "model": model_name, "dir": str(folder), "files": files,
                        "seconds": time.perf_counter() - t0})
        return out

    def _predict(self, case: _Case, model, card, device: str, fast: bool, cancel):
        from semisupseg.inference import SegmentOptions, segment

        options = SegmentOptions(device=device, fast=fast, compute_sdm=True, compute_entropy=True)
        return segment(case.image, model, card, options, cancel=cancel)

    def _regions(self, case: _Case, model, method, ctx) -> Tuple[np.ndarray, str]:
        """Region codes on the training grid and their source."""
        from semisupseg.methods.sgrs import partition

        return partition(model, case.on_grid.array, self.patch_size_zyx, ctx.device, ctx.seg_form,
                         self.classes.num_classes, method)

    def _write_case(self, case: _Case, iteration: int, model, card, method, ctx, device: str, fast: bool,
                    model_name: str, cancel) -> Tuple[Path, List[Dict[str, Any]]]:
        from semisupseg.data.preprocess import resample_like
        from semisupseg.geometry import REGION_NAMES
        from semisupseg.io import write_volume

        ref = _reference(case.image)
        result = self._predict(case, model, card, device, fast, cancel)
        n = self.classes.num_classes
        entries: List[Tuple[Dict[str, Any], Volume]] = [
            ({"kind": "segmentation", "file": "segmentation.nii.gz", "class_names": self.classes.names,
              "label_values": self.classes.label_values}, result.labels)]
        sdm, source = result.sdm.array, result.sdm_source  # the head's, else the segmentation's (segment() decides)
        for c in range(1, n):
            entries.append((dict(self._class_info(c), kind="sdm", file=f"sdm_c{c}.nii.gz", source=source),
                            ref.with_array(np.asarray(sdm[c - 1], dtype=np.float32))))
        if result.entropy is not None:
            entries.append(({"kind": "entropy", "file": "entropy.nii.gz", "base": "e", "unit": "nats",
                             "max": math.log(n)}, result.entropy))
        entries.extend(case.gt_maps)
        if case.role not in LABELED_ROLES:
            if cancel is not None:
                cancel.raise_if_cancelled("overlays")
            codes, source = self._regions(case, model, method, ctx)
            back = resample_like(case.on_grid.with_array(codes), ref, is_label=True)
            entries.append(({"kind": "regions", "file": "regions.nii.gz", "source": source,
                             "codes": {str(k): v for k, v in REGION_NAMES.items()}},
                            ref.with_array(back.array.astype(np.uint8))))
        case_dir = self.root / case_folder_name(case.case_id)
        case_dir.mkdir(parents=True, exist_ok=True)
        final = case_dir / set_name(iteration)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=str(case_dir)))
        try:
            files = []
            for meta, vol in entries:
                write_volume(vol, tmp / meta["file"])
                files.append(meta)
            manifest = {"format": "semisupseg-overlays", "version": 1, "case": case.case_id, "role": case.role,
                        "iteration": int(iteration), "model": model_name, "method": getattr(method, "name", None),
                        "image": str(Path(case.image.path).resolve()), "class_names": self.classes.names,
                        "label_values": self.classes.label_values, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            if final.exists():  # the same iteration again (a resumed run): the new set replaces it
                old = case_dir / f".old-{final.name}-{time.time_ns()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for old in list_sets(case_dir)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final, [dict(meta, path=str(final / meta["file"])) for meta, _ in entries]


def _reference(image: Volume) -> Volume:
    """An empty volume with ``image``'s geometry (channels dropped)."""
    return Volume(np.zeros(image.shape_zyx, dtype=np.uint8), image.spacing, image.origin, image.direction.copy(),
                  image.path)


__all__ = ["SnapshotWriter", "case_folder_name", "set_name", "list_sets", "newest_set", "read_manifest"]
