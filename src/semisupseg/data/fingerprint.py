"""Dataset fingerprint and the training defaults derived from it (planning in the manner of nnU-Net).

A :class:`DatasetFingerprint` summarises the training cases: per case the grid size and voxel spacing (from the file
headers, **x, y, z**), and — from one pass over the arrays of the labeled cases (at most :data:`MAX_ARRAY_CASES`,
evenly spread) — the label values and intensity statistics (percentiles of a fixed-seed sample of voxels, of the
whole image and of the labelled foreground; also in per-case z-score units). The modality is read from
``dataset.json`` (``modality`` / ``channel_names``) or guessed from the intensities (CT when air, about -1000 HU,
is present).

:func:`plan_defaults` turns a fingerprint into settings: the target spacing (median), the patch size (the median
scan size at that spacing, each side a multiple of 16 as the V-Net needs, shrunk until a training step fits a memory
budget), batch sizes and the normalisation (per-scan z-score for MRI; for CT the foreground's 0.5-99.5 percentile
window and its mean/std, nnU-Net's CT scheme). :func:`resolve_plan` applies them to a
:class:`~semisupseg.training.config.TrainConfig` only where the user set nothing (``data.patch_size`` and
``data.spacing`` ``None``, ``data.normalization`` empty) and records what it did in ``config.plan`` (kept in the
run's ``config.yaml`` and the model card's ``training["plan"]``; the training-data statistics in
``training["data_statistics"]``). :func:`domain_warnings` compares a scan about to be segmented with those
statistics (out-of-domain warning).

Memory model (:func:`estimate_memory_mb`): peak resident memory of a training step of the V-Net with 16 base filters
in bf16 on CPU, measured with the mean-teacher method (student + EMA teacher) at a global batch of 4: 756 MB at
32x48x32, 1093 MB at 64x64x48, 1956 MB at 96x96x64, 2899 MB at 112x112x80 voxels — linear in the voxels of the
batch (561 bytes per voxel) over a fixed 650 MB (interpreter, torch, network). Methods with extra networks
(discriminators, multi-branch SB-Net) need more; the default budget (:data:`DEFAULT_MEMORY_BUDGET_MB`) leaves room.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback, no_progress

PathLike = Union[str, Path]

#: labeled cases whose arrays are read for the intensity statistics (evenly spread over the list)
MAX_ARRAY_CASES = 40
#: voxels sampled per case (whole image and foreground each) for the intensity percentiles
SAMPLES_PER_CASE = 20000
#: memory model of a training step, V-Net n_filters=16, bf16, global batch of B patches: MB = BASE + PER_VOXEL * B * V
MEMORY_BASE_MB = 650.0
MEMORY_PER_VOXEL_MB = 561e-6
#: default memory budget of a training step (MB): a 112x112x80 patch at batch 4 (the papers' LA setting) fits
DEFAULT_MEMORY_BUDGET_MB = 4096.0
#: patch sides are multiples of this (four 2x down-samplings of the V-Net)
PATCH_MULTIPLE = 16
PERCENTILES = (0.5, 1.0, 5.0, 50.0, 95.0, 99.0, 99.5)
#: per-case z-scored percentiles whose range over the training cases the card records
Z_CASE_PERCENTILES = (5.0, 50.0, 95.0)
_MRI_WORDS = ("mr", "mri", "t1", "t2", "flair", "lge", "dwi", "adc", "pd", "bold", "cine")


def _pkey(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", "_"))


def _stats(values: np.ndarray) -> Dict[str, float]:
    """Percentiles (:data:`PERCENTILES`, keys ``p0_5``... ``p99_5``), ``mean``, ``std``, ``min``, ``max``."""
    if values.size == 0:
        return {}
    v = values.astype(np.float64, copy=False)
    out = {_pkey(p): float(q) for p, q in zip(PERCENTILES, np.percentile(v, PERCENTILES))}
    out.update(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()))
    return {k: round(x, 6) for k, x in out.items()}


@dataclass
class CaseFingerprint:
    """One case: ``size_xyz`` (voxels), ``spacing_xyz`` (mm), ``labeled``, and — when its arrays were read —
    ``label_values`` present in its label."""

    case_id: str
    size_xyz: Tuple[int, int, int]
    spacing_xyz: Tuple[float, float, float]
    labeled: bool = False
    label_values: Optional[List[int]] = None

    @property
    def extent_mm(self) -> Tuple[float, float, float]:
        return tuple(float(n) * float(s) for n, s in zip(self.size_xyz, self.spacing_xyz))  # type: ignore


@dataclass
class DatasetFingerprint:
    """What :func:`fingerprint_cases` found (see the module doc). ``intensity`` / ``foreground_intensity``: raw
    intensity statistics of the sampled voxels of the labeled images (whole image / label > 0);
    ``intensity_z``: the same after a per-case z-score (what per-scan normalisation makes of them);
    ``intensity_z_cases``: per percentile (``p5``, ``p50``, ``p95``) the ``[min, max]`` over the cases of their
    own z-scored percentile (how much the training scans differ among themselves);
    ``modality``: ``"MRI"`` or ``"CT"``, ``modality_source``: ``"dataset.json"`` or ``"intensities"``."""

    cases: List[CaseFingerprint]
    modality: str = "MRI"
    modality_source: str = "intensities"
    class_values: List[int] = field(default_factory=list)
    intensity: Dict[str, float] = field(default_factory=dict)
    foreground_intensity: Dict[str, float] = field(default_factory=dict)
    intensity_z: Dict[str, float] = field(default_factory=dict)
    intensity_z_cases: Dict[str, List[float]] = field(default_factory=dict)
    arrays_read: int = 0
    seconds: float = 0.0

    def _median(self, values) -> List[float]:
        return [float(v) for v in np.median(np.asarray(values, dtype=np.float64), axis=0)]

    @property
    def median_spacing_xyz(self) -> List[float]:
        return [round(v, 6) for v in self._median([c.spacing_xyz for c in self.cases])]

    @property
    def median_size_xyz(self) -> List[float]:
        return self._median([c.size_xyz for c in self.cases])

    @property
    def median_extent_mm(self) -> List[float]:
        return [round(v, 3) for v in self._median([c.extent_mm for c in self.cases])]

    @property
    def spacings_differ(self) -> bool:
        sp = np.asarray([c.spacing_xyz for c in self.cases], dtype=np.float64)
        return bool(len(sp) > 1 and np.any(np.abs(sp - sp[0]) > 1e-3 * sp[0]))

    def median_shape_at(self, spacing_xyz: Sequence[float]) -> List[float]:
        """Median grid size (x, y, z voxels) of the cases resampled to ``spacing_xyz``."""
        t = np.asarray(spacing_xyz, dtype=np.float64)
        return self._median([np.asarray(c.extent_mm) / t for c in self.cases])

    def statistics(self) -> Dict[str, Any]:
        """The training-data statistics a model card records (compared by :func:`domain_warnings`)."""
        return {"cases": len(self.cases), "modality": self.modality,
                "median_spacing_xyz": self.median_spacing_xyz,
                "median_size_xyz": [round(v, 1) for v in self.median_size_xyz],
                "median_extent_mm": self.median_extent_mm,
                "max_extent_mm": [round(float(v), 3) for v in np.max([c.extent_mm for c in self.cases], axis=0)],
                "intensity": dict(self.intensity), "intensity_z": dict(self.intensity_z),
                "intensity_z_cases": {k: list(v) for k, v in self.intensity_z_cases.items()},
                "foreground_intensity": dict(self.foreground_intensity), "class_values": list(self.class_values)}

    def to_dict(self) -> Dict[str, Any]:
        d = self.statistics()
        d.update(modality_source=self.modality_source, arrays_read=self.arrays_read,
                 seconds=round(self.seconds, 2), spacings_differ=self.spacings_differ,
                 case_list=[asdict(c) for c in self.cases])
        return d


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------
def read_header(path: PathLike, h5_spacing: Sequence[float] = (0.625, 0.625, 0.625)
                ) -> Tuple[Tuple[int, int, int], Tuple[float, float, float]]:
    """``(size_xyz, spacing_xyz)`` of an image file from its header (the voxels are not read; a DICOM folder and
    formats without a header reader are read whole). ``.h5`` (LA release): the ``image`` dataset's shape, stored
    x, y, z, and ``h5_spacing``."""
    from semisupseg.io import header_information, read_image_or_h5, volume_suffix

    p = Path(path)
    if volume_suffix(p) in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(str(p), "r") as handle:
                shape = tuple(int(s) for s in handle["image"].shape if s != 1)
        except (OSError, KeyError) as exc:
            raise InputError(f"cannot read the HDF5 'image' dataset: {exc}", p) from exc
        if len(shape) != 3:
            raise InputError(f"'image' dataset has shape {shape}; a 3D x,y,z array is required", p)
        return shape, tuple(float(s) for s in h5_spacing)  # type: ignore[return-value]
    reader = header_information(p) if p.is_file() else None
    if reader is not None and len(reader.GetSize()) >= 3:
        size = tuple(int(s) for s in reader.GetSize())
        spacing = tuple(float(s) for s in reader.GetSpacing())
        return size[:3], spacing[:3]  # type: ignore[return-value]
    vol = read_image_or_h5(p, h5_spacing=h5_spacing)
    return tuple(vol.size_xyz), tuple(float(s) for s in vol.spacing)  # type: ignore[return-value]


def read_modality(dataset_json: Optional[PathLike]) -> Optional[str]:
    """``"CT"`` / ``"MRI"`` from a ``dataset.json`` (``modality`` of MSD, ``channel_names`` of nnU-Net v2; the first
    channel), ``None`` when absent or not recognised."""
    if dataset_json is None or not Path(dataset_json).is_file():
        return None
    try:
        data = json.loads(Path(dataset_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = data.get("modality") or data.get("channel_names") or {}
    if isinstance(entry, dict) and entry:
        name = str(entry.get("0", next(iter(entry.values()))))
    elif isinstance(entry, str):
        name = entry
    else:
        return None
    words = name.lower().replace("-", " ").replace("_", " ").split()
    if "ct" in words:
        return "CT"
    if any(w in _MRI_WORDS or w.endswith("mri") for w in words):
        return "MRI"
    return None


def guess_modality(intensity: Dict[str, float]) -> str:
    """``"CT"`` when the intensities look like Hounsfield units (air about -1000 among the lowest voxels and
    soft tissue/bone above 100), else ``"MRI"``."""
    if intensity and intensity.get("p0_5", 0.0) <= -500.0 and intensity.get("p99_5", 0.0) >= 100.0:
        return "CT"
    return "MRI"


def _spread(n: int, k: int) -> List[int]:
    """``k`` indices spread evenly over ``range(n)`` (all when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def fingerprint_cases(cases: Sequence[Any], dataset_json: Optional[PathLike] = None,
                      h5_spacing: Sequence[float] = (0.625, 0.625, 0.625), max_array_cases: int = MAX_ARRAY_CASES,
                      samples_per_case: int = SAMPLES_PER_CASE, progress: ProgressCallback = no_progress,
                      cancel: Optional[CancelToken] = None, seed: int = 0) -> DatasetFingerprint:
    """The fingerprint of ``cases`` (:class:`semisupseg.data.Case`: headers of all; arrays of at most
    ``max_array_cases`` labeled ones, the first channel). Unreadable cases are left out (training reports them all
    when it reads the data); when none is readable, the first problem is raised (:class:`InputError`)."""
    from semisupseg.io import read_image_or_h5, read_label_or_h5

    t0 = time.perf_counter()
    if not cases:
        raise InputError("no cases to take a fingerprint of")
    rng = np.random.default_rng(seed)
    out: List[CaseFingerprint] = []
    problems: List[InputError] = []
    usable = []
    for i, case in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled("reading the data")
        try:
            size, spacing = read_header(case.channel_paths[0], h5_spacing)
        except InputError as exc:  # reported with all other problems when the data is loaded
            problems.append(exc)
            continue
        out.append(CaseFingerprint(case.case_id, size, spacing, labeled=case.label_path is not None))
        usable.append(case)
        progress(0.3 * (i + 1) / len(cases), f"headers {i + 1}/{len(cases)}")
    if not out:
        raise problems[0]
    cases = usable
    labeled = [i for i, c in enumerate(cases) if c.label_path is not None]
    chosen = [labeled[j] for j in _spread(len(labeled), max_array_cases)]
    whole: List[np.ndarray] = []
    fg: List[np.ndarray] = []
    zs: List[np.ndarray] = []
    values: set = set()
    per_case: List[np.ndarray] = []
    for n, i in enumerate(chosen):
        if cancel is not None:
            cancel.raise_if_cancelled("reading the data")
        case = cases[i]
        try:
            image = read_image_or_h5(case.channel_paths[0], h5_spacing=h5_spacing)
            label = read_label_or_h5(case.label_path, image, h5_spacing=h5_spacing)
        except InputError as exc:
            problems.append(exc)
            continue
        arr = image.array.reshape(-1)
        lab = label.array.reshape(-1)
        present = sorted(int(v) for v in np.unique(lab))
        out[i].label_values = present
        values.update(present)
        take = rng.choice(arr.size, size=min(samples_per_case, arr.size), replace=False)
        sample = arr[take].astype(np.float64)
        whole.append(sample)
        mean, std = float(arr.mean(dtype=np.float64)), float(arr.std(dtype=np.float64))
        zs.append((sample - mean) / std if std > 0 else np.zeros_like(sample))
        per_case.append(np.percentile(zs[-1], Z_CASE_PERCENTILES))
        inside = np.flatnonzero(lab > 0)
        if inside.size:
            pick = inside if inside.size <= samples_per_case else rng.choice(inside, samples_per_case, replace=False)
            fg.append(arr[pick].astype(np.float64))
        progress(0.3 + 0.7 * (n + 1) / len(chosen), f"intensities {n + 1}/{len(chosen)}")
    intensity = _stats(np.concatenate(whole)) if whole else {}
    declared = read_modality(dataset_json)
    fp = DatasetFingerprint(
        cases=out, modality=declared or guess_modality(intensity),
        modality_source="dataset.json" if declared else "intensities", class_values=sorted(values),
        intensity=intensity, foreground_intensity=_stats(np.concatenate(fg)) if fg else {},
        intensity_z=_stats(np.concatenate(zs)) if zs else {}, arrays_read=len(chosen),
        intensity_z_cases={_pkey(p): [round(float(np.min(col)), 4), round(float(np.max(col)), 4)]
                           for p, col in zip(Z_CASE_PERCENTILES, np.asarray(per_case).T)} if per_case else {})
    fp.seconds = time.perf_counter() - t0
    return fp


def fingerprint_data(data_cfg: Any, progress: ProgressCallback = no_progress,
                     cancel: Optional[CancelToken] = None) -> DatasetFingerprint:
    """The fingerprint of the training cases a :class:`~semisupseg.training.config.DataConfig` names (labeled and
    validation cases; the unlabeled pool's headers too)."""
    from semisupseg.training.loading import resolve_cases

    ds, _ = resolve_cases(data_cfg, with_unlabeled=True, problems=[])  # problems: reported when training reads
    cases = list(ds.labeled) + list(ds.val) + list(ds.unlabeled)
    root = Path(data_cfg.labeled) if data_cfg.labeled and data_cfg.labels is None else None
    return fingerprint_cases(cases, dataset_json=None if root is None else root / "dataset.json",
                             h5_spacing=tuple(float(s) for s in data_cfg.h5_spacing), progress=progress,
                             cancel=cancel)


def fingerprint_arrays(data: Any) -> DatasetFingerprint:
    """A fingerprint of in-memory training data (:class:`semisupseg.training.data.TrainData`, already on its
    training grid and normalised): sizes and spacings only, so only the patch size can be planned from it."""
    cases = [CaseFingerprint(c.case_id, tuple(int(s) for s in reversed(c.image.shape[-3:])),
                             tuple(float(s) for s in c.spacing_xyz), labeled=c.label is not None)
             for c in list(data.labeled) + list(data.validation) + list(data.unlabeled)]
    if not cases:
        raise InputError("no cases to take a fingerprint of")
    return DatasetFingerprint(cases=cases, modality_source="unknown")


# ---------------------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------------------
def estimate_memory_mb(patch_xyz: Sequence[int], batch_size: int, n_filters: int = 16) -> float:
    """Estimated peak memory (MB) of one training step (see the module doc for the measurements)."""
    voxels = float(np.prod([int(v) for v in patch_xyz]))
    return MEMORY_BASE_MB + MEMORY_PER_VOXEL_MB * batch_size * voxels * (n_filters / 16.0)


@dataclass
class Plan:
    """Settings derived from a fingerprint: ``patch_size_xyz`` (voxels), ``spacing_xyz`` (mm, ``None``: keep the
    cases' common grid), ``target_spacing_xyz`` (the grid the model works on either way), ``normalization``
    (a :class:`~semisupseg.data.preprocess.NormalizationConfig` dict), ``batch_size`` / ``labeled_batch_size``,
    ``memory_mb`` (estimate for that patch and batch), and the ``reasons`` a person reads, per setting."""

    patch_size_xyz: List[int]
    spacing_xyz: Optional[List[float]]
    target_spacing_xyz: List[float]
    normalization: Dict[str, Any]
    batch_size: int
    labeled_batch_size: int
    memory_mb: float
    memory_budget_mb: float
    reasons: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["memory_mb"] = round(self.memory_mb)
        d["memory_budget_mb"] = round(self.memory_budget_mb)
        return d


def _round16(v: float) -> int:
    return max(PATCH_MULTIPLE, int(round(v / PATCH_MULTIPLE)) * PATCH_MULTIPLE)


def patch_size_problem(patch_xyz: Sequence[int]) -> Optional[str]:
    """Why ``patch_xyz`` (x, y, z voxels) cannot be a V-Net patch or window, or ``None``: each side must be a
    positive multiple of :data:`PATCH_MULTIPLE` (the network halves it four times and adds the skip connections
    back). The message proposes the sizes rounded up."""
    sides = [int(v) for v in patch_xyz]
    if all(v >= PATCH_MULTIPLE and v % PATCH_MULTIPLE == 0 for v in sides):
        return None
    up = [max(PATCH_MULTIPLE, -(-v // PATCH_MULTIPLE) * PATCH_MULTIPLE) for v in sides]
    return (f"every side must be a multiple of {PATCH_MULTIPLE} voxels (the V-Net halves it four times), got "
            f"{' x '.join(map(str, sides))} (x y z): e.g. {' '.join(map(str, up))}")


def plan_defaults(fp: DatasetFingerprint, memory_budget_mb: Optional[float] = None, batch_size: int = 4,
                  labeled_batch_size: int = 2, n_filters: int = 16) -> Plan:
    """The training defaults for the data ``fp`` describes (see the module doc). ``memory_budget_mb``: the largest
    estimated training-step memory (default :data:`DEFAULT_MEMORY_BUDGET_MB`)."""
    budget = float(memory_budget_mb or DEFAULT_MEMORY_BUDGET_MB)
    target = fp.median_spacing_xyz
    resample = fp.spacings_differ
    reasons: Dict[str, str] = {}
    if resample:
        reasons["spacing"] = (f"the cases' voxel sizes differ; all are resampled to the median "
                              f"{_fmt(target)} mm")
    else:
        reasons["spacing"] = f"all cases share {_fmt(target)} mm: no resampling"
    shape = fp.median_shape_at(target)
    patch = [_round16(v) for v in shape]
    reasons["patch_size"] = (f"median scan size {_fmt(shape, 0)} voxels at {_fmt(target)} mm, sides rounded to "
                             f"multiples of {PATCH_MULTIPLE}")
    shrunk = False
    while estimate_memory_mb(patch, batch_size, n_filters) > budget and max(patch) > PATCH_MULTIPLE:
        # shrink the side that is largest relative to the median scan (nnU-Net's rule), physically largest on ties
        ratios = [p / max(s, 1.0) * (1 + 1e-6 * p * t) for p, s, t in zip(patch, shape, target)]
        axis = int(np.argmax([r if p > PATCH_MULTIPLE else -1 for r, p in zip(ratios, patch)]))
        patch[axis] -= PATCH_MULTIPLE
        shrunk = True
    lbs, bs = int(labeled_batch_size), int(batch_size)
    while estimate_memory_mb(patch, bs, n_filters) > budget and bs > 2:
        bs -= 1
        lbs = min(lbs, max(1, bs // 2))
    memory = estimate_memory_mb(patch, bs, n_filters)
    if shrunk:
        reasons["patch_size"] += f", shrunk to fit the {budget / 1024:.1f} GB memory budget"
    reasons["patch_size"] += f" (about {memory / 1024:.1f} GB per step at batch {bs})"
    reasons["batch_size"] = f"{lbs} labeled + {bs - lbs} unlabeled patches per step" + \
        ("" if bs == batch_size else f" (reduced from {batch_size} to fit the memory budget)")
    if fp.modality == "CT" and fp.foreground_intensity:
        f = fp.foreground_intensity
        norm = {"kind": "fixed", "clip": [f["p0_5"], f["p99_5"]], "mean": f["mean"], "std": max(f["std"], 1e-6)}
        reasons["normalization"] = (f"CT ({'dataset.json' if fp.modality_source == 'dataset.json' else 'guessed from the intensities'}): "
                                    f"clipped to the foreground's 0.5-99.5 percentiles [{f['p0_5']:g}, {f['p99_5']:g}], "
                                    f"then its mean {f['mean']:.4g} / std {f['std']:.4g}")
    else:
        norm = {"kind": "zscore"}
        src = {"dataset.json": "dataset.json", "intensities": "guessed from the intensities"}.get(
            fp.modality_source, "modality unknown")
        reasons["normalization"] = f"{fp.modality} ({src}): z-score per scan"
    return Plan(patch_size_xyz=patch, spacing_xyz=list(target) if resample else None,
                target_spacing_xyz=list(target), normalization=norm, batch_size=bs, labeled_batch_size=lbs,
                memory_mb=memory, memory_budget_mb=budget, reasons=reasons)


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    return " x ".join(f"{round(float(v), digits):g}" for v in values)


#: the config keys the plan may fill, with the DataConfig attribute and the Plan value
PLANNED_KEYS = ("data.patch_size", "data.spacing", "data.normalization")


def unset_keys(cfg: Any) -> List[str]:
    """The :data:`PLANNED_KEYS` the config leaves to the data (``None`` / empty)."""
    d = cfg.data
    out = []
    if d.patch_size is None:
        out.append("data.patch_size")
    if d.spacing is None:
        out.append("data.spacing")
    if not d.normalization:
        out.append("data.normalization")
    return out


def resolve_plan(cfg: Any, data: Any = None, fingerprint: Optional[DatasetFingerprint] = None,
                 memory_budget_mb: Optional[float] = None, progress: ProgressCallback = no_progress,
                 cancel: Optional[CancelToken] = None) -> Dict[str, Any]:
    """Fill the settings of ``cfg`` (a :class:`~semisupseg.training.config.TrainConfig`) that the user left unset
    (:func:`unset_keys`) from the data's plan, and record it in ``cfg.plan``: ``from_data`` (key -> value set
    here), ``left_to_data`` (the keys that were unset; ``data.spacing`` may stay ``None``: the files' own grid),
    ``reasons``, ``plan`` (all planned values) and ``statistics`` (:meth:`DatasetFingerprint.statistics`).
    ``data``: in-memory :class:`~semisupseg.training.data.TrainData` (then only the patch size is planned; the
    cases are on their training grid already). Returns ``cfg.plan``."""
    if fingerprint is None:
        fingerprint = fingerprint_arrays(data) if data is not None else \
            fingerprint_data(cfg.data, progress=progress, cancel=cancel)
    plan = plan_defaults(fingerprint, memory_budget_mb, batch_size=int(cfg.batch_size),
                         labeled_batch_size=int(cfg.labeled_batch_size), n_filters=int(cfg.model.n_filters))
    unset = unset_keys(cfg)
    if data is not None:
        unset = [k for k in unset if k == "data.patch_size"]
    applied: Dict[str, Any] = {}
    if "data.patch_size" in unset:
        cfg.data.patch_size = list(plan.patch_size_xyz)
        applied["data.patch_size"] = list(plan.patch_size_xyz)
    if "data.spacing" in unset and plan.spacing_xyz is not None:
        cfg.data.spacing = list(plan.spacing_xyz)
        applied["data.spacing"] = list(plan.spacing_xyz)
    if "data.normalization" in unset:
        cfg.data.normalization = dict(plan.normalization)
        applied["data.normalization"] = dict(plan.normalization)
    reasons = {f"data.{k}": v for k, v in plan.reasons.items() if k != "batch_size"}
    reasons["batch_size"] = plan.reasons["batch_size"]
    planned = {k: v for k, v in plan.to_dict().items() if k != "reasons"}
    record = {"from_data": applied, "left_to_data": unset, "reasons": reasons, "plan": planned,
              "statistics": fingerprint.statistics() if data is None else {}}
    cfg.plan = record
    return record


def describe_plan(record: Dict[str, Any]) -> List[str]:
    """Lines for people: each planned setting, its value, whether it was taken ("from the data") or the user's
    own setting was kept, and why. ``record``: ``cfg.plan`` as :func:`resolve_plan` leaves it."""
    plan = record.get("plan") or {}
    applied = record.get("from_data") or {}
    reasons = record.get("reasons") or {}
    lines = []
    for key, value in (("data.patch_size", plan.get("patch_size_xyz")),
                       ("data.spacing", plan.get("spacing_xyz") or plan.get("target_spacing_xyz")),
                       ("data.normalization", plan.get("normalization"))):
        shown = _fmt(value, 4) if isinstance(value, list) else json.dumps(value)
        left = key in (record.get("left_to_data") or applied)
        state = "(from the data)" if left else "(suggested; your setting is kept)"
        if key == "data.spacing" and left and not plan.get("spacing_xyz"):
            shown = f"{_fmt(plan.get('target_spacing_xyz') or [], 4)} mm, the files' own grid"
        lines.append(f"{key + ':':20s}{shown} {state} - {reasons.get(key, '')}".rstrip(" -"))
    if plan.get("batch_size"):
        lines.append(f"{'batch_size:':20s}{plan['batch_size']} (suggested) - {reasons.get('batch_size', '')}")
    return lines


def plan_for(cfg: Any, memory_budget_mb: Optional[float] = None) -> Dict[str, Any]:
    """What :func:`resolve_plan` would record for ``cfg`` (a :class:`~semisupseg.training.config.TrainConfig`),
    without changing it: ``semisupseg check-data`` shows ``describe_plan(plan_for(cfg))`` — the defaults training
    would take from the data, each marked "(from the data)" or "(suggested; your setting is kept)"."""
    import copy

    return resolve_plan(copy.deepcopy(cfg), memory_budget_mb=memory_budget_mb)


def dataset_defaults(data_cfg: Any, memory_budget_mb: Optional[float] = None, batch_size: int = 4,
                     labeled_batch_size: int = 2, n_filters: int = 16) -> Tuple[DatasetFingerprint, Plan]:
    """``(fingerprint, plan)`` of the data a :class:`~semisupseg.training.config.DataConfig` names — what
    ``semisupseg check-data`` shows as the training defaults (nothing is changed)."""
    fp = fingerprint_data(data_cfg)
    return fp, plan_defaults(fp, memory_budget_mb, batch_size, labeled_batch_size, n_filters)


# ---------------------------------------------------------------------------------------------------------------
# out-of-domain check at inference
# ---------------------------------------------------------------------------------------------------------------
#: an input this many times the training scans' median extent (along one axis) is far outside them
EXTENT_FACTOR = 3.0
#: without training statistics (older cards): this many times the training patch
PATCH_EXTENT_FACTOR = 5.0
#: a voxel size this many times larger or smaller than the model's (along one axis)
SPACING_FACTOR = 3.0
#: a per-scan z-scored percentile of the input is off when it lies outside the training cases' range widened by
#: that range's width (at least this much) on both sides
Z_MARGIN = 0.5


def intensity_summary(array: np.ndarray, samples: int = 200000, seed: int = 0) -> Tuple[Dict[str, float],
                                                                                      Dict[str, float]]:
    """``(raw, z)`` statistics (:func:`_stats`) of a sample of ``array``'s voxels, raw and per-scan z-scored."""
    a = np.asarray(array).reshape(-1)
    if a.size > samples:
        a = a[np.random.default_rng(seed).choice(a.size, samples, replace=False)]
    a = a.astype(np.float64)
    std = a.std()
    return _stats(a), _stats((a - a.mean()) / std if std > 0 else np.zeros_like(a))


def domain_warnings(volume: Any, card: Any) -> List[str]:
    """One line per way the scan ``volume`` (:class:`~semisupseg.volume.Volume`) lies far outside what the model
    of ``card`` was trained on: physical extent many times larger or smaller than the training scans' (or, for
    cards without training statistics, the training patch's), a voxel size far from the model's, intensities
    unlike the training images' (CT-like input to an MRI model or the reverse; per-scan normalised percentiles far
    off). Empty when nothing is off."""
    out: List[str] = []
    stats = (getattr(card, "training", None) or {}).get("data_statistics") or {}
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    extent = np.asarray(volume.size_xyz, dtype=np.float64) * spacing
    axes = "xyz"
    shown_extent, shown_spacing = extent, spacing  # messages: the scan's own numbers and axis names
    target = (getattr(card, "inference", None) or {}).get("orientation")
    if target:  # the scan is compared axis by axis as the network will see it (in its training scans' order)
        from semisupseg.orientation import reorientation

        order = list(reorientation(volume.direction, target).source)
        spacing, extent, axes = spacing[order], extent[order], "".join("xyz"[c] for c in order)
    ref = stats.get("median_extent_mm")
    if ref:
        ref_a = np.asarray(ref, dtype=np.float64)
        factor, what = EXTENT_FACTOR, "the training scans' median"
    else:
        ref_a = np.asarray(card.patch_size_xyz, dtype=np.float64) * np.asarray(card.spacing_xyz, dtype=np.float64)
        factor, what = PATCH_EXTENT_FACTOR, "the training patch"
    ratio = extent / np.maximum(ref_a, 1e-6)
    if np.any(ratio > factor):
        a = int(np.argmax(ratio))
        out.append(f"the scan is {_fmt(shown_extent, 0)} mm, {ratio[a]:.1f}x {what} ({_fmt(ref_a, 0)} mm) along "
                   f"{axes[a]}: the model never saw anything this large")
    if np.any(ratio < 1.0 / factor):  # the mirror: e.g. a small crop through a model of a larger anatomy
        a = int(np.argmin(ratio))
        out.append(f"the scan is {_fmt(shown_extent, 0)} mm, {ratio[a]:.2f}x {what} ({_fmt(ref_a, 0)} mm) along "
                   f"{axes[a]}: the model never saw anything this small")
    elif np.prod(ratio) < 1.0 / factor ** 2:  # small along every axis, though no axis alone is below 1/factor
        out.append(f"the scan is {_fmt(shown_extent, 0)} mm, {np.prod(ratio):.2f}x the volume of {what} "
                   f"({_fmt(ref_a, 0)} mm): the model never saw anything this small")
    model_sp = np.asarray(card.spacing_xyz, dtype=np.float64)
    sp_ratio = spacing / model_sp
    bad = [i for i in range(3) if sp_ratio[i] > SPACING_FACTOR or sp_ratio[i] < 1.0 / SPACING_FACTOR]
    if bad:
        i = bad[0]
        out.append(f"voxel size {_fmt(shown_spacing)} mm is far from the model's {_fmt(model_sp)} mm "
                   f"({sp_ratio[i]:.2g}x along {axes[i]})")
    train_raw = stats.get("intensity") or {}
    train_z = stats.get("intensity_z") or {}
    if train_raw or train_z:
        arr = np.asarray(volume.array)
        raw, z = intensity_summary(arr[0] if arr.ndim == 4 else arr)
        modality = stats.get("modality", "MRI")
        looks = guess_modality(raw)
        if looks != modality and (looks == "CT" or guess_modality(train_raw) == "CT"):
            out.append(f"the intensities look like {looks} (0.5-99.5 percentiles {raw['p0_5']:.4g}..{raw['p99_5']:.4g})"
                       f" but the model was trained on {modality} ({train_raw.get('p0_5', math.nan):.4g}.."
                       f"{train_raw.get('p99_5', math.nan):.4g})")
        else:
            ranges = stats.get("intensity_z_cases") or {}
            for k, (lo, hi) in ranges.items():
                margin = max(Z_MARGIN, hi - lo)
                if k in z and not lo - margin <= z[k] <= hi + margin:
                    out.append(f"the intensity distribution is unlike the training images' (per-scan normalised "
                               f"{k[1:]}th percentile {z[k]:.2f}; training scans {lo:.2f}..{hi:.2f})")
                    break
    return out


__all__ = ["CaseFingerprint", "DatasetFingerprint", "Plan", "fingerprint_cases", "fingerprint_data",
           "fingerprint_arrays", "plan_defaults", "resolve_plan", "plan_for", "describe_plan", "dataset_defaults",
           "estimate_memory_mb", "domain_warnings", "read_header", "read_modality", "guess_modality",
           "unset_keys", "patch_size_problem", "DEFAULT_MEMORY_BUDGET_MB", "PATCH_MULTIPLE"]
