"""Cases, classes, dataset discovery and splits, and loading cases into memory for training.

Layouts understood by :func:`discover_cases`:

* MSD / nnU-Net: ``ROOT/imagesTr/<id>.nii.gz`` + ``ROOT/labelsTr/<id>.nii.gz`` (nnU-Net's channel suffix
  ``<id>_0000.nii.gz`` on images is tolerated; ``_0001``... become extra input channels), classes from
  ``ROOT/dataset.json`` when present (MSD ``{"0": "background", ...}`` or nnU-Net v2 ``{"background": 0, ...}``);
* an images folder and a labels folder given separately (matching file names, any readable suffix);
* the LA release: ``ROOT/<id>/mri_norm2.h5`` (image and label in one file);
* unlabeled data (:func:`discover_unlabeled`): a folder of images only.

A split file (:func:`load_split`, JSON object of ID lists, like ``../shared/data/LA/splits.json`` with ``train``,
``labeled_8``, ``labeled_16`` and optionally ``val``) chooses which cases of a labeled folder are used *as labeled*
(``labeled_key`` or the first ``num_labeled`` of ``train``); the rest of ``train`` becomes unlabeled. Cases treated
as unlabeled get ``label_path=None`` at discovery time, so their labels are never opened.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg.errors import InputError
from semisupseg.io import (
    LA_H5_SPACING,
    check_label_geometry,
    check_not_constant,
    is_volume_file,
    read_image_or_h5,
    read_label_or_h5,
    strip_suffix,
)
from semisupseg.progress import CancelToken, ProgressCallback, no_progress
from semisupseg.volume import Volume

from semisupseg.data.preprocess import PreprocessConfig, preprocess_image, resample_volume

__all__ = [
    "Case",
    "ClassInfo",
    "DataProblem",
    "raise_problems",
    "DatasetSpec",
    "Dataset",
    "LoadedCase",
    "LoadedDataset",
    "discover_cases",
    "discover_unlabeled",
    "load_split",
    "apply_split",
    "build_dataset",
    "load_case",
    "load_cases",
    "read_case",
    "load_dataset",
    "read_dataset_json",
]

PathLike = Union[str, Path]
_CHANNEL_RE = re.compile(r"^(?P<base>.+)_(?P<ch>\d{4})$")
_H5_NAME = "mri_norm2.h5"


# ---------------------------------------------------------------------------------------------------------------
# cases and classes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One case on disk. ``image_path`` is a file (or DICOM folder) — or a tuple of files, one per input channel;
    ``label_path`` is ``None`` for unlabeled cases (and for labeled-folder cases a split marks unlabeled).
    For the LA h5 layout image and label path are the same ``mri_norm2.h5``."""

    case_id: str
    image_path: Union[Path, Tuple[Path, ...]]
    label_path: Optional[Path] = None

    @property
    def labeled(self) -> bool:
        return self.label_path is not None

    @property
    def channel_paths(self) -> Tuple[Path, ...]:
        return tuple(self.image_path) if isinstance(self.image_path, tuple) else (self.image_path,)

    def as_unlabeled(self) -> "Case":
        """The same case without its label (the label file will never be read)."""
        return Case(self.case_id, self.image_path, None)


@dataclass
class DataProblem:
    """One problem found in the data: ``message`` about the file ``path`` (``None`` for a problem of the whole set,
    e.g. a split file that names absent cases), for the case ``case_id`` when known. ``severity``: ``"error"``
    (training cannot start) or ``"warning"`` (training starts; the user may not expect what happens, e.g. an image
    without a label file used as unlabeled). :attr:`line` is the one line shown to the user."""

    message: str
    path: Optional[str] = None
    case_id: Optional[str] = None
    severity: str = "error"

    @property
    def line(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    @classmethod
    def from_error(cls, exc: InputError, case_id: Optional[str] = None) -> "DataProblem":
        """The problem an :class:`InputError` reports (its path kept apart from its message)."""
        text = str(exc)
        path = None if exc.path is None else str(exc.path)
        if path is not None and text.startswith(f"{path}: "):
            text = text[len(path) + 2:]
        return cls(text, path, case_id, "error")

    def to_dict(self) -> Dict[str, Any]:
        return {"severity": self.severity, "path": self.path, "case": self.case_id, "message": self.message,
                "line": self.line}


#: at most this many problems are spelled out in the one error :func:`raise_problems` raises
MAX_LISTED_PROBLEMS = 20


def raise_problems(problems: Sequence[DataProblem], what: str = "the training data") -> None:
    """Raise one :class:`InputError` for the errors among ``problems`` (warnings are ignored): a single error is
    raised as it is (its own one line); several become one error with one line per problem (the first
    :data:`MAX_LISTED_PROBLEMS`), so a user fixes them all in one go."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return
    if len(errors) == 1:
        raise InputError(errors[0].message, errors[0].path)
    lines = [p.line for p in errors[:MAX_LISTED_PROBLEMS]]
    more = len(errors) - len(lines)
    tail = f"\n  ... and {more} more (semisupseg check-data lists them all)" if more > 0 else ""
    raise InputError(f"{len(errors)} problems in {what}:\n  " + "\n  ".join(lines) + tail)


@dataclass
class ClassInfo:
    """The classes of a task. ``names[i]`` and ``label_values[i]`` (the voxel value in label files) describe class
    index ``i``; index 0 is the background. Networks predict indices ``0..num_classes-1``."""

    names: List[str]
    label_values: List[int]

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.label_values = [int(v) for v in self.label_values]
        if len(self.names) != len(self.label_values):
            raise InputError(f"{len(self.names)} class names but {len(self.label_values)} label values")
        if len(self.names) < 2:
            raise InputError(f"at least 2 classes (background + one) are needed, got {self.names}")
        if len(set(self.label_values)) != len(self.label_values):
            raise InputError(f"duplicate label values {self.label_values}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def default(cls, num_classes: int = 2) -> "ClassInfo":
        """``background`` + ``class_1``... with values ``0..num_classes-1``."""
        names = ["background"] + [f"class_{i}" for i in range(1, int(num_classes))]
        return cls(names, list(range(int(num_classes))))

    @classmethod
    def from_values(cls, values: Sequence[int], names: Optional[Sequence[str]] = None) -> "ClassInfo":
        vals = sorted(set(int(v) for v in values) | {0})
        if names is None:
            names = ["background"] + [f"class_{v}" for v in vals[1:]]
        return cls(list(names), vals)

    def to_indices(self, labels: np.ndarray, path: Optional[PathLike] = None) -> np.ndarray:
        """Map file label values to class indices (uint8 when < 256). Unknown values raise :class:`InputError`."""
        if self.label_values == list(range(self.num_classes)):
            present = np.unique(labels)
            bad = [int(v) for v in present if v < 0 or v >= self.num_classes]
            if bad:
                raise InputError(f"label values {bad} are outside the declared classes {self.label_values} "
                                 f"({self.names})", path)
            dtype = np.uint8 if self.num_classes <= 256 else np.int16
            return labels.astype(dtype, copy=False)
        lut_keys = np.asarray(self.label_values)
        present = np.unique(labels)
        bad = [int(v) for v in present if int(v) not in set(self.label_values)]
        if bad:
            raise InputError(f"label values {bad} are outside the declared classes {self.label_values} "
                             f"({self.names})", path)
        order = np.argsort(lut_keys)
        idx = np.searchsorted(lut_keys[order], labels)
        out = order[idx]
        return out.astype(np.uint8 if self.num_classes <= 256 else np.int16)

    def to_dict(self) -> Dict[str, Any]:
        return {"names": list(self.names), "label_values": list(self.label_values)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ClassInfo":
        return cls(list(d["names"]), list(d["label_values"]))


def read_dataset_json(path: PathLike) -> ClassInfo:
    """Classes from an MSD (``"labels": {"0": "background", "1": "Anterior"}``) or nnU-Net v2
    (``"labels": {"background": 0, "Anterior": 1}``) ``dataset.json``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read dataset JSON: {exc}", p) from exc
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError("dataset JSON has no 'labels' object", p)
    pairs: List[Tuple[int, str]] = []
    for k, v in labels.items():
        if re.fullmatch(r"-?\d+", str(k)):
            pairs.append((int(k), str(v)))
        elif isinstance(v, int) and not isinstance(v, bool):
            pairs.append((int(v), str(k)))
        else:
            raise InputError(f"unsupported label entry {k!r}: {v!r} (region-based labels are not supported)", p)
    pairs.sort()
    if pairs[0][0] != 0:
        pairs.insert(0, (0, "background"))
    return ClassInfo([n for _, n in pairs], [v for v, _ in pairs])


# ---------------------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------------------
def _volume_entries(folder: Path, problems: Optional[List[DataProblem]] = None) -> Dict[str, Path]:
    """``id -> path`` of the readable volumes in ``folder`` (files; and ``<id>/mri_norm2.h5`` sub-folders).

    Two files for one case id are an error; with a ``problems`` list it is recorded there (naming the second
    file, which is left out) instead of raised."""
    if not folder.is_dir():
        raise InputError("folder not found" if not folder.exists() else "not a folder", folder)
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            h5 = p / _H5_NAME
            if h5.is_file():
                out[p.name] = h5
            continue
        if not is_volume_file(p):
            continue
        cid = strip_suffix(p)
        if cid in out:
            if problems is None:
                raise InputError(f"two files for case {cid!r}: {out[cid].name} and {p.name}", folder)
            problems.append(DataProblem(f"second file for case {cid!r} (the first is {out[cid].name}); one file "
                                        "per case", str(p), cid))
            continue
        out[cid] = p
    return out


def _group_channels(entries: Dict[str, Path], label_ids: Optional[set] = None
                    ) -> Dict[str, Union[Path, Tuple[Path, ...]]]:
    """Group nnU-Net ``<id>_0000``, ``<id>_0001``... files into the channels of case ``<id>``.

    Used when every name carries such a suffix, no label file uses the suffixed name, and the grouping is
    consistent: each case has channels ``0..n-1`` with the same ``n``, and either ``n == 1`` or there are at least
    two cases (a lone ``scan_0000 .. scan_0099`` series is read as 100 cases, not one 100-channel case). When the
    labels use the bare ids, an inconsistent grouping is an error; otherwise the names are taken as they are.
    """
    if not entries:
        return {}
    matches = {cid: _CHANNEL_RE.match(cid) for cid in entries}
    if not all(m is not None for m in matches.values()):
        return dict(entries)
    if label_ids is not None and any(cid in label_ids for cid in entries):
        return dict(entries)
    groups: Dict[str, Dict[int, Path]] = {}
    for cid, m in matches.items():
        groups.setdefault(m.group("base"), {})[int(m.group("ch"))] = entries[cid]  # type: ignore[union-attr]
    labels_use_bases = label_ids is not None and all(base in label_ids for base in groups)
    counts = {base: len(chans) for base, chans in groups.items()}
    consistent = all(sorted(chans) == list(range(len(chans))) for chans in groups.values()) \
        and len(set(counts.values())) == 1
    n_channels = next(iter(counts.values()))
    if not consistent or (n_channels > 1 and len(groups) < 2 and not labels_use_bases):
        if labels_use_bases:
            bad = sorted((b, sorted(c)) for b, c in groups.items() if sorted(c) != list(range(len(c))))[:3]
            raise InputError(f"inconsistent nnU-Net channel files: channels per case {sorted(set(counts.values()))}"
                             f"{'; ' + str(bad) if bad else ''} (expected _0000.._000N for every case)",
                             next(iter(entries.values())).parent)
        return dict(entries)
    return {base: (chans[0] if n_channels == 1 else tuple(chans[i] for i in range(n_channels)))
            for base, chans in sorted(groups.items())}


def discover_cases(
    root: Optional[PathLike] = None,
    images: Optional[PathLike] = None,
    labels: Optional[PathLike] = None,
    allow_missing_labels: bool = False,
    problems: Optional[List[DataProblem]] = None,
) -> List[Case]:
    """Labeled cases from ``root`` (``imagesTr``/``labelsTr`` inside, or the LA ``<id>/mri_norm2.h5`` layout) or
    from separate ``images`` and ``labels`` folders (matching names). Images without a label are an error unless
    ``allow_missing_labels`` (they are then returned unlabeled); labels without an image are always an error.
    Label files are only listed here, not opened. Sorted by case id.

    ``problems``: collect the pairing problems there, one per file (a label without its image, a second file for a
    case, an image without its label when labels are required; images used as unlabeled are recorded as
    warnings) and return the cases that pair, instead of raising at the first. Folder-level errors (a folder
    missing, no images at all) are raised either way."""
    if root is not None:
        r = Path(root)
        if not r.is_dir():
            raise InputError("dataset folder not found" if not r.exists() else "not a folder", r)
        if (r / "imagesTr").is_dir():
            images = r / "imagesTr"
            labels = r / "labelsTr" if (r / "labelsTr").is_dir() else None
            if labels is None and not allow_missing_labels:
                raise InputError("has imagesTr/ but no labelsTr/ (use it as an unlabeled folder instead)", r)
        else:
            entries = _volume_entries(r)
            h5 = {cid: p for cid, p in entries.items() if p.name == _H5_NAME}
            if h5 and len(h5) == len(entries):
                return [Case(cid, p, p) for cid, p in sorted(h5.items())]
            raise InputError(
                "expected imagesTr/ + labelsTr/ (MSD/nnU-Net layout) or <id>/mri_norm2.h5 sub-folders (LA layout); "
                "for a plain folder of images, give their label maps' folder with --labels DIR (data.labels)", r)
    if images is None:
        raise InputError("no images folder given (root, or images + labels)")
    img_entries = _volume_entries(Path(images), problems)
    if not img_entries:
        raise InputError("no readable images in the folder (expected .nii.gz, .nii, .nrrd, .mha/.mhd files, "
                         "DICOM series folders or <id>/mri_norm2.h5)", images)
    if labels is None:
        if not allow_missing_labels:
            raise InputError("no labels folder given (--labels DIR, data.labels)", images)
        grouped = _group_channels(img_entries)
        return [Case(cid, p, None) for cid, p in sorted(grouped.items())]
    lab_entries = _volume_entries(Path(labels), problems)
    grouped = _group_channels(img_entries, set(lab_entries))
    missing = sorted(set(grouped) - set(lab_entries))
    orphans = sorted(set(lab_entries) - set(grouped))
    if problems is not None:
        for cid in orphans:
            problems.append(DataProblem(f"label file without an image: no image named {cid!r} in {images}",
                                        str(lab_entries[cid]), cid))
        for cid in missing:
            path = grouped[cid] if not isinstance(grouped[cid], tuple) else grouped[cid][0]
            if allow_missing_labels:
                problems.append(DataProblem(f"no label file named {cid!r} in {labels}: used as an unlabeled case",
                                            str(path), cid, "warning"))
            else:
                problems.append(DataProblem(f"image without a label file: no label named {cid!r} in {labels}",
                                            str(path), cid))
        return [Case(cid, p, lab_entries.get(cid)) for cid, p in sorted(grouped.items())
                if allow_missing_labels or cid in lab_entries]
    if orphans:
        raise InputError(f"{len(orphans)} label files have no matching image in {images}: {orphans[:5]}", labels)
    if missing and not allow_missing_labels:
        raise InputError(f"{len(missing)} images have no label in {labels}: {missing[:5]} (pass "
                         "allow_missing_labels to use them as unlabeled)", images)
    return [Case(cid, p, lab_entries.get(cid)) for cid, p in sorted(grouped.items())]


def discover_unlabeled(folder: PathLike, problems: Optional[List[DataProblem]] = None) -> List[Case]:
    """Unlabeled cases: every readable image in ``folder`` (an ``imagesTr``/``imagesTs`` sub-folder is used when
    ``folder`` holds one and no images itself). No label is looked for. ``problems``: as in
    :func:`discover_cases`."""
    f = Path(folder)
    entries = _volume_entries(f, problems)
    if not entries:
        for sub in ("imagesTr", "imagesTs"):
            if (f / sub).is_dir():
                entries = _volume_entries(f / sub, problems)
                break
    if not entries:
        raise InputError("no readable images in the unlabeled folder (expected .nii.gz, .nii, .nrrd, .mha/.mhd "
                         "files, DICOM series folders, or an imagesTr/ or imagesTs/ sub-folder of them)", f)
    return [Case(cid, p, None) for cid, p in sorted(_group_channels(entries).items())]


# ---------------------------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------------------------
def load_split(path: PathLike) -> Dict[str, List[str]]:
    """A split file: a JSON object whose values are lists of case ids (e.g. ``train``, ``labeled_8``, ``val``);
    string values (``"note"``) are ignored as comments."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read split JSON: {exc}", p) from exc
    if not isinstance(data, dict):
        raise InputError("split JSON must be an object of id lists", p)
    out: Dict[str, List[str]] = {}
    for key, ids in data.items():
        if isinstance(ids, str):  # free-text entries ("note", "description") are comments
            continue
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InputError(f"split entry {key!r} must be a list of case id strings", p)
        if len(set(ids)) != len(ids):
            raise InputError(f"split entry {key!r} lists a case twice", p)
        out[str(key)] = list(ids)
    return out


def apply_split(
    cases: Sequence[Case],
    split: Dict[str, List[str]],
    labeled_key: Optional[str] = None,
    num_labeled: Optional[int] = None,
    train_key: str = "train",
    val_key: Optional[str] = "val",
    split_path: Optional[PathLike] = None,
) -> Tuple[List[Case], List[Case], List[Case]]:
    """``(labeled, unlabeled, val)`` from labeled-folder ``cases`` and a split.

    Training ids: ``split[train_key]`` (all cases if absent). Labeled: ``split[labeled_key]`` if given, else the
    first ``num_labeled`` training ids, else all training ids. Unlabeled: the other training ids, returned
    **without label path**. Val: ``split[val_key]`` when that key exists (labeled; must not overlap training).
    Ids the split names but the folder lacks raise :class:`InputError`. Order follows the split file.
    """
    by_id = {c.case_id: c for c in cases}

    def get(key: str) -> List[str]:
        if key not in split:
            raise InputError(f"split has no {key!r} list (keys: {sorted(split)})", split_path)
        ids = split[key]
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"split list {key!r} names {len(unknown)} cases not in the dataset: {unknown[:5]}",
                             split_path)
        return ids

    train_ids = get(train_key) if train_key in split else [c.case_id for c in cases]
    if labeled_key is not None:
        lab_ids = get(labeled_key)
        outside = [i for i in lab_ids if i not in set(train_ids)]
        if outside:
            raise InputError(f"labeled list {labeled_key!r} has ids not in {train_key!r}: {outside[:5]}", split_path)
    elif num_labeled is not None:
        if not 0 < int(num_labeled) <= len(train_ids):
            raise InputError(f"num_labeled={num_labeled} must be in 1..{len(train_ids)} (training cases)")
        lab_ids = train_ids[: int(num_labeled)]
    else:
        lab_ids = list(train_ids)
    lab_set = set(lab_ids)
    labeled = [by_id[i] for i in lab_ids]
    no_label = [c.case_id for c in labeled if c.label_path is None]
    if no_label:
        raise InputError(f"cases chosen as labeled have no label file: {no_label[:5]}", split_path)
    unlabeled = [by_id[i].as_unlabeled() for i in train_ids if i not in lab_set]
    val: List[Case] = []
    if val_key is not None and val_key in split:
        val_ids = get(val_key)
        overlap = sorted(set(val_ids) & set(train_ids))
        if overlap:
            raise InputError(f"validation list {val_key!r} overlaps {train_key!r}: {overlap[:5]}", split_path)
        val = [by_id[i] for i in val_ids]
        no_label = [c.case_id for c in val if c.label_path is None]
        if no_label:
            raise InputError(f"validation cases have no label file: {no_label[:5]}", split_path)
    return labeled, unlabeled, val


@dataclass
class DatasetSpec:
    """Where the training data is and how it is split (JSON/YAML-able; the engine's config embeds it).

    ``root``: an MSD/nnU-Net folder (``imagesTr``/``labelsTr``) or LA h5 folder; or ``images`` + ``labels``.
    ``unlabeled``: extra folders of unlabeled images. ``split``: split JSON (default: ``root/splits.json`` if it
    exists), with ``labeled_key`` / ``num_labeled`` / ``train_key`` / ``val_key`` as in :func:`apply_split`.
    ``class_names`` / ``label_values``: override the classes (else ``root/dataset.json``, else the values found
    in the labeled cases). ``h5_spacing_xyz``: voxel size assumed for ``.h5`` files.
    """

    root: Optional[str] = None
    images: Optional[str] = None
    labels: Optional[str] = None
    unlabeled: List[str] = field(default_factory=list)
    split: Optional[str] = None
    labeled_key: Optional[str] = None
    num_labeled: Optional[int] = None
    train_key: str = "train"
    val_key: Optional[str] = "val"
    class_names: Optional[List[str]] = None
    label_values: Optional[List[int]] = None
    h5_spacing_xyz: Tuple[float, float, float] = LA_H5_SPACING

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["h5_spacing_xyz"] = [float(s) for s in self.h5_spacing_xyz]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DatasetSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown dataset options {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("unlabeled"), str):
            d["unlabeled"] = [d["unlabeled"]]
        if d.get("h5_spacing_xyz") is not None:
            d["h5_spacing_xyz"] = tuple(float(s) for s in d["h5_spacing_xyz"])
        return cls(**d)


@dataclass
class Dataset:
    """Discovered cases: ``labeled`` (with labels), ``unlabeled`` (``label_path`` always ``None``), ``val``
    (labeled, held out) and the ``classes`` (``None`` until known: then :func:`load_dataset` infers them)."""

    labeled: List[Case]
    unlabeled: List[Case]
    val: List[Case] = field(default_factory=list)
    classes: Optional[ClassInfo] = None
    spec: Optional[DatasetSpec] = None
    #: human-readable remarks on how the cases were chosen (split file used, images without labels...)
    notes: List[str] = field(default_factory=list)
    #: unlabeled cases found but left out of training (beyond a cap, or a method using labeled data only)
    unused: List[Case] = field(default_factory=list)

    def summary(self) -> str:
        cls = "" if self.classes is None else f", classes {self.classes.names}"
        text = f"{len(self.labeled)} labeled, {len(self.unlabeled)} unlabeled, {len(self.val)} validation{cls}"
        return text + "".join(f"\n  {n}" for n in self.notes)


def _where_labels_were_sought(spec: DatasetSpec, cases: Sequence[Case]) -> str:
    """For the "no labeled cases" error: the folders searched and what was expected in them."""
    if spec.root is not None:
        r = Path(spec.root)
        if (r / "imagesTr").is_dir():
            if not (r / "labelsTr").is_dir():
                return (f"{r} has imagesTr/ but no labelsTr/ (expected the label maps there, named like the images; "
                        "or use the folder as an unlabeled folder)")
            return (f"none of the {len(cases)} images in {r / 'imagesTr'} has a label map of the same name in "
                    f"{r / 'labelsTr'}")
        return f"no case of {r} has a label"
    if spec.images is not None:
        if spec.labels is None:
            return (f"{spec.images} is a plain images folder and no labels folder was given (expected --labels DIR "
                    "with label maps named like the images, or an imagesTr/ + labelsTr/ dataset folder)")
        return f"none of the {len(cases)} images in {spec.images} has a label map of the same name in {spec.labels}"
    return ("only unlabeled folders were given; semi-supervised training needs labeled cases too (--labeled DIR: "
            "a dataset folder with imagesTr/ + labelsTr/, or an images folder with --labels DIR)")


def _first_path(case: Case) -> Path:
    return case.channel_paths[0]


def _unlabeled_folder_cases(folders: Sequence[PathLike], found: Sequence[Case], with_label: Sequence[Case],
                            pool: Sequence[Case], notes: List[str], problems: Optional[List[DataProblem]],
                            dedupe: bool = True) -> List[Case]:
    """The cases of the unlabeled ``folders``, each scan once, matched by case id (the file name without its
    suffix, channels grouped): an image whose id is a labeled or validation case of the labeled folder
    (``with_label``) is dropped from the unlabeled pool with a warning (a scan both labeled and unlabeled — and a
    validation case would also be trained on); one whose id is already in the unlabeled pool (``pool``, another
    image of the labeled folder, or an earlier unlabeled folder) is dropped with a note, the first copy kept. An id
    of a labeled-folder case a split leaves out (``found``, in no role) is kept as ``<folder name>/<id>``. Warnings
    go to ``problems`` when given, else to ``notes``. ``dedupe=False`` (:func:`build_dataset`'s default): nothing
    is dropped; an image whose id is taken by a labeled, validation or pool case is kept as ``<folder name>/<id>``."""
    labeled_ids = {c.case_id: c for c in with_label}
    seen = {c.case_id for c in pool}
    unused = {c.case_id for c in found} - seen - set(labeled_ids)  # left out by a split: renamed, as before
    taken = seen | set(labeled_ids)  # dedupe=False: the ids before the unlabeled folders
    out: List[Case] = []
    for folder in folders:
        repeated: List[str] = []
        for c in discover_unlabeled(folder, problems):
            if not dedupe:
                out.append(Case(f"{Path(folder).name}/{c.case_id}", c.image_path, None) if c.case_id in taken else c)
                continue
            if c.case_id in labeled_ids:
                first = labeled_ids[c.case_id]
                problem = DataProblem(f"case {c.case_id!r} is also a labeled case ({_first_path(first)}): dropped "
                                      "from the unlabeled pool (a scan is either labeled or unlabeled; a validation "
                                      "case trained on as unlabeled would leak)", str(_first_path(c)), c.case_id,
                                      "warning")
                if problems is not None:
                    problems.append(problem)
                else:
                    notes.append(f"warning: {problem.line}")
                continue
            if c.case_id in seen:
                repeated.append(c.case_id)
                continue
            seen.add(c.case_id)
            if c.case_id in unused:
                c = Case(f"{Path(folder).name}/{c.case_id}", c.image_path, None)
            out.append(c)
        if repeated:
            shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
            notes.append(f"{len(repeated)} image(s) of the unlabeled folder {folder} are already in the unlabeled "
                         f"pool (same case id: {shown}): each scan is used once, the first copy is kept")
    return out


def build_dataset(spec: Union[DatasetSpec, Dict[str, Any]], problems: Optional[List[DataProblem]] = None,
                  dedupe_unlabeled: bool = False) -> Dataset:
    """Discover and split the cases described by ``spec`` (no image or label is read here).

    ``problems``: collect per-file pairing problems there instead of raising at the first (see
    :func:`discover_cases`); errors of the set as a whole (folders, split file, no labeled case) still raise.
    ``dedupe_unlabeled`` (what training uses): each scan of the unlabeled folders is used once and never besides
    its labeled copy (:func:`_unlabeled_folder_cases`); without it an unlabeled image whose case id is already taken
    is kept under the id ``<folder name>/<id>``."""
    if isinstance(spec, dict):
        spec = DatasetSpec.from_dict(spec)
    if spec.root is None and spec.images is None:
        if not spec.unlabeled:
            raise InputError("no data given: set root, or images + labels")
    cases: List[Case] = []
    if spec.root is not None or spec.images is not None:
        cases = discover_cases(spec.root, spec.images, spec.labels, allow_missing_labels=True, problems=problems)
    split_path = spec.split
    if split_path is None and spec.root is not None and (Path(spec.root) / "splits.json").is_file():
        split_path = str(Path(spec.root) / "splits.json")
    notes: List[str] = []
    no_label = [c.case_id for c in cases if not c.labeled]
    if no_label:
        notes.append(f"{len(no_label)} images of the labeled folder have no label file (e.g. {no_label[:3]}): "
                     "they can only be unlabeled cases")
    if split_path is not None:
        split = load_split(split_path)
        notes.append(f"split {split_path}: labeled = "
                     + (repr(spec.labeled_key) if spec.labeled_key else
                        (f"first {spec.num_labeled} of {spec.train_key!r}" if spec.num_labeled else
                         f"all of {spec.train_key!r}")))
        labeled, unlabeled, val = apply_split(cases, split, spec.labeled_key, spec.num_labeled, spec.train_key,
                                              spec.val_key, split_path)
    else:
        if spec.labeled_key is not None:
            where = f" ({spec.root})" if spec.root is not None else ""
            raise InputError(f"--split-labeled (data.split_labeled) {spec.labeled_key!r} names a list of a split JSON, "
                             f"but there is none: give --split FILE or put splits.json in the dataset folder{where}")
        with_label = [c for c in cases if c.labeled]
        unlabeled = [c.as_unlabeled() for c in cases if not c.labeled]
        if spec.num_labeled is not None:
            if not 0 < int(spec.num_labeled) <= len(with_label):
                raise InputError(f"num_labeled={spec.num_labeled} must be in 1..{len(with_label)} (labeled cases)")
            unlabeled = [c.as_unlabeled() for c in with_label[int(spec.num_labeled):]] + unlabeled
            with_label = with_label[: int(spec.num_labeled)]
        labeled, val = with_label, []
    unlabeled += _unlabeled_folder_cases(spec.unlabeled, cases, labeled + val, unlabeled, notes, problems,
                                         dedupe=dedupe_unlabeled)
    classes: Optional[ClassInfo] = None
    if spec.label_values is not None or spec.class_names is not None:
        if spec.label_values is not None:
            names = spec.class_names or (["background"] + [f"class_{v}" for v in spec.label_values[1:]])
            classes = ClassInfo(list(names), list(spec.label_values))
        else:
            classes = ClassInfo(list(spec.class_names), list(range(len(spec.class_names))))  # type: ignore[arg-type]
    elif spec.root is not None and (Path(spec.root) / "dataset.json").is_file():
        classes = read_dataset_json(Path(spec.root) / "dataset.json")
    if not labeled:
        if split_path is not None:
            raise InputError(f"no labeled cases: the split selects none (labeled = {spec.labeled_key or spec.train_key!r}"
                             f" list of {split_path})", split_path)
        raise InputError("no labeled cases: " + _where_labels_were_sought(spec, cases))
    return Dataset(labeled, unlabeled, val, classes, spec, notes)


# ---------------------------------------------------------------------------------------------------------------
# loading into memory
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LoadedCase:
    """A preprocessed case held in memory for training/validation.

    ``image``: ``(C, Z, Y, X)`` float32, normalised, on the training grid. ``label``: ``(Z, Y, X)`` class indices
    (uint8) or ``None``. ``spacing_xyz``: voxel size of that grid (mm). ``geometry``: the original image's
    geometry (``spacing_xyz``, ``origin_xyz``, ``direction``, ``size_xyz``, ``path``) before resampling.
    """

    case_id: str
    image: np.ndarray
    label: Optional[np.ndarray] = None
    spacing_xyz: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    geometry: Dict[str, Any] = field(default_factory=dict)

    @property
    def shape_zyx(self) -> Tuple[int, int, int]:
        return tuple(self.image.shape[-3:])  # type: ignore[return-value]

    @property
    def labeled(self) -> bool:
        return self.label is not None

    def without_label(self) -> "LoadedCase":
        """This case as unlabeled (shares the image array), e.g. to also feed labeled images to the unlabeled
        stream."""
        return LoadedCase(self.case_id, self.image, None, self.spacing_xyz, self.geometry)


def _read_case_image(case: Case, h5_spacing: Sequence[float], what: str = "learn from") -> Volume:
    vols = [read_image_or_h5(p, h5_spacing=h5_spacing) for p in case.channel_paths]
    for v, p in zip(vols, case.channel_paths):
        check_not_constant(v, p, what)  # z-scored it would be all zeros: a case that teaches (or shows) nothing
    first = vols[0]
    for v in vols[1:]:
        check_label_geometry(v, first, v.path)  # same checks apply to channels
    if len(vols) == 1:
        return first
    return first.with_array(np.stack([v.array for v in vols]))


def read_case(
    case: Case,
    classes: Optional[ClassInfo] = None,
    with_label: bool = True,
    h5_spacing: Sequence[float] = LA_H5_SPACING,
    what: str = "learn from",
) -> Tuple[Volume, Optional[Volume]]:
    """Read one case as it is on disk, with every check training makes: each image file readable (channels on one
    grid), the label (when ``with_label`` and the case has one) readable, whole-numbered, on the image's grid
    (:func:`semisupseg.io.check_label_geometry`) and, when ``classes`` is given, holding only their label values.
    Returns ``(image, label)``: the image float32 ``(Z, Y, X)`` or ``(C, Z, Y, X)``, the label with its file values
    (or ``None``). Problems raise :class:`InputError` naming the file. :func:`load_case` (training) and the data
    check (``semisupseg check-data``) both read cases through this function; ``what`` the case is read for names
    the problem of a constant image ("nothing to learn from", "nothing to rank")."""
    image = _read_case_image(case, h5_spacing, what)
    label_vol: Optional[Volume] = None
    if with_label and case.label_path is not None:
        label_vol = read_label_or_h5(case.label_path, image,
                                     label_values=None if classes is None else classes.label_values,
                                     h5_spacing=h5_spacing)
    return image, label_vol


def load_case(
    case: Case,
    preprocess: Optional[PreprocessConfig] = None,
    classes: Optional[ClassInfo] = None,
    with_label: bool = True,
    h5_spacing: Sequence[float] = LA_H5_SPACING,
) -> Tuple[LoadedCase, Optional[np.ndarray]]:
    """Read and preprocess one case. The label is read only when ``with_label`` and ``case.label_path`` is set;
    it is validated against the image geometry and mapped to class indices with ``classes`` (when ``classes`` is
    ``None`` the raw values are kept and also returned as the second item for class inference).
    Returns ``(LoadedCase, raw label values present or None)``."""
    cfg = preprocess or PreprocessConfig()
    image, label_vol = read_case(case, classes, with_label, h5_spacing)
    from semisupseg.orientation import reorientation_to

    turn = reorientation_to(image.direction, cfg.orientation)
    if turn is not None:  # a case stored in another voxel order is seen in the order of the others (exact)
        image = turn.volume(image)
        label_vol = None if label_vol is None else turn.volume(label_vol)
    geometry = {"spacing_xyz": list(image.spacing), "origin_xyz": list(image.origin),
                "direction": image.direction.reshape(-1).tolist(), "size_xyz": list(image.size_xyz),
                "path": str(case.channel_paths[0])}
    present = None
    label_idx: Optional[np.ndarray] = None
    if label_vol is not None:
        if classes is not None:
            label_vol = label_vol.with_array(classes.to_indices(label_vol.array, case.label_path))
        else:
            present = np.unique(label_vol.array)
    image = preprocess_image(image, cfg)
    if cfg.spacing_xyz is not None and label_vol is not None:
        label_vol = resample_volume(label_vol, cfg.spacing_xyz, is_label=True, label_mode=cfg.label_mode,
                                    num_classes=None if classes is None else classes.num_classes)
    arr = image.array
    if arr.ndim == 3:
        arr = arr[None]
    if label_vol is not None:
        label_idx = label_vol.array
    loaded = LoadedCase(case.case_id, np.ascontiguousarray(arr, dtype=np.float32), label_idx,
                        tuple(image.spacing), geometry)  # type: ignore[arg-type]
    return loaded, present


def load_cases(
    cases: Sequence[Case],
    preprocess: Optional[PreprocessConfig] = None,
    classes: Optional[ClassInfo] = None,
    with_labels: bool = True,
    h5_spacing: Sequence[float] = LA_H5_SPACING,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelToken] = None,
) -> List[LoadedCase]:
    """Load ``cases`` (see :func:`load_case`); ``classes`` must be known when labels are read (use
    :func:`load_dataset` to infer them). Reports progress per case and honours ``cancel``."""
    out: List[LoadedCase] = []
    n = len(cases)
    for i, case in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled("loading cases")
        loaded, _ = load_case(case, preprocess, classes, with_labels, h5_spacing)
        out.append(loaded)
        progress((i + 1) / max(n, 1), f"loaded {case.case_id}")
    return out


@dataclass
class LoadedDataset:
    """All cases of a :class:`Dataset` preprocessed in memory, with the classes and the preprocessing used."""

    labeled: List[LoadedCase]
    unlabeled: List[LoadedCase]
    val: List[LoadedCase]
    classes: ClassInfo
    preprocess: PreprocessConfig

    @property
    def in_channels(self) -> int:
        return int(self.labeled[0].image.shape[0])

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes


def load_dataset(
    dataset: Dataset,
    preprocess: Optional[PreprocessConfig] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelToken] = None,
    problems: Optional[List[DataProblem]] = None,
) -> LoadedDataset:
    """Read and preprocess every case of ``dataset``. Labels of unlabeled cases are never read (their
    ``label_path`` is ``None``). When ``dataset.classes`` is ``None`` the classes are the sorted union of the label
    values found in the labeled and validation cases (0 always included).

    A bad file does not stop the reading: every case is tried and all problems are raised together at the end
    (:func:`raise_problems`: one line per file), so a user sees them all at once; ``problems`` found before
    (pairing problems of the discovery) are raised with them."""
    cfg = preprocess or PreprocessConfig()
    h5_spacing = dataset.spec.h5_spacing_xyz if dataset.spec is not None else LA_H5_SPACING
    with_label = list(dataset.labeled) + list(dataset.val)
    total = len(with_label) + len(dataset.unlabeled)
    done = [0]
    problems = [] if problems is None else problems
    failed: set = set()

    def tick(case_id: str) -> None:
        done[0] += 1
        progress(done[0] / max(total, 1), f"loaded {case_id} ({done[0]}/{total})")

    classes = dataset.classes
    if classes is None:
        # Infer the classes from the label values present (labels are small: one extra read of each labeled file).
        values: set = set()
        for case in with_label:
            if cancel is not None:
                cancel.raise_if_cancelled("loading cases")
            try:
                lab = read_label_or_h5(case.label_path, None, h5_spacing=h5_spacing)  # type: ignore[arg-type]
            except InputError as exc:
                problems.append(DataProblem.from_error(exc, case.case_id))
                failed.add(case.case_id)
                continue
            values |= set(int(v) for v in np.unique(lab.array))
        try:
            classes = ClassInfo.from_values(sorted(values))
        except InputError as exc:  # e.g. no label could be read: the reasons come first
            problems.append(DataProblem.from_error(exc))
            raise_problems(problems)
            raise

    def load(case: Case, labels: bool) -> Optional[LoadedCase]:
        if cancel is not None:
            cancel.raise_if_cancelled("loading cases")
        if case.case_id in failed:
            return None
        try:
            lc, _ = load_case(case, cfg, classes, labels, h5_spacing)
        except InputError as exc:
            problems.append(DataProblem.from_error(exc, case.case_id))
            return None
        tick(case.case_id)
        return lc

    labeled = [load(c, True) for c in dataset.labeled]
    val = [load(c, True) for c in dataset.val]
    unlabeled = [load(c, False) for c in dataset.unlabeled]
    raise_problems(problems)
    return LoadedDataset(labeled, unlabeled, val, classes, cfg)  # type: ignore[arg-type]
