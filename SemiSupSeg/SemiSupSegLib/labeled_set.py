"""Add the current scan and its segmentation to a labeled training set, as a new case.

The labeled set is what ``semisupseg train --labeled`` reads (``semisupseg.data.cases.discover_cases``): an MSD /
nnU-Net folder (``ROOT/imagesTr/<id>.nii.gz`` + ``ROOT/labelsTr/<id>.nii.gz``, classes in ``ROOT/dataset.json``), or
an images folder and a labels folder with matching names. :func:`add_to_labeled_set` writes

* the image from the volume node: its voxels in their own type (an int16 CT stays int16), its exact geometry
  (``SemiSupSegLib.scene.volume_from_node``: RAS→LPS, k,j,i = z,y,x), in the set's file format (the suffix most of
  its images have; ``.nii.gz`` for a new set; nnU-Net's ``_0000`` channel suffix when the set uses it);
* the label map exported from the segmentation node **in the image's geometry** (Slicer's
  ``ExportSegmentsToLabelmapNode`` into the volume node's grid, one segment at a time), each segment's voxels set to
  the label value of its class, matched **by segment name** (case-insensitive) to the set's classes — else by the
  label-value tag the SemiSupSeg module gives the segments it makes, else, for one segment and one foreground class,
  that class. Where segments overlap, the later segment wins (the count is reported).

Classes, first found: the set's ``dataset.json``; the ``class_names``/``label_values`` given (the model's, from its
card); for a new, empty set, the segments themselves (their tag values, else 1, 2, ... in segment order) — and a new
MSD set gets a ``dataset.json`` so the next case maps by name. Otherwise it is an error: values chosen blindly would
silently mislabel.

Never overwrites: the case gets a new unique name (the volume's name, else ``case``, with ``_2``, ``_3``... when
taken by an image or a label), both files are written completely under temporary names in hidden folders of the set
and then linked into place with ``os.link``, which fails instead of replacing a file that appeared meanwhile; a
failure removes what this call wrote and nothing else. Afterwards the case is read back with the package's own
reader (``semisupseg.data.cases.read_case``: pairing, readability, label on the image grid, label values among the
classes) and compared with what was meant; a mismatch removes the two files and raises.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
DEFAULT_SUFFIX = ".nii.gz"
_CHANNEL = "_0000"


@dataclass
class LabeledSetLayout:
    """Where a labeled set keeps its files: ``images`` and ``labels`` folders, ``root`` (the MSD folder holding
    ``imagesTr``/``labelsTr`` and ``dataset.json``; ``None`` for an images + labels pair), the image ``suffix`` to
    write, whether images carry nnU-Net's ``_0000`` channel suffix, and the case ids taken."""

    images: Path
    labels: Path
    root: Optional[Path] = None
    suffix: str = DEFAULT_SUFFIX
    channel_suffix: bool = False
    taken: set = field(default_factory=set)
    label_files: int = 0

    @property
    def dataset_json(self) -> Optional[Path]:
        return None if self.root is None else self.root / "dataset.json"


@dataclass
class AddedCase:
    """What :func:`add_to_labeled_set` wrote: the new ``case_id``, its ``image`` and ``label`` files, the
    ``segment_values`` used (``{segment name: label value}``), ``voxels`` per label value in the written label map,
    the ``classes`` (``{"names": [...], "label_values": [...]}``) and ``notes`` for the user."""

    case_id: str
    image: Path
    label: Path
    segment_values: Dict[str, int]
    voxels: Dict[int, int]
    classes: Dict[str, list]
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# layout, names, classes
# ----------------------------------------------------------------------------------------------------------------------

def _volume_files(folder: Path) -> List[Path]:
    from semisupseg.io import is_volume_file

    return [p for p in sorted(folder.iterdir()) if is_volume_file(p)] if folder.is_dir() else []


#: file systems that ignore case in names by default (NTFS, APFS)
_CASE_INSENSITIVE = sys.platform in ("win32", "darwin")


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name one folder: by the file system when both exist (on the case-insensitive disks of
    Windows and macOS, ``Labels`` and ``labels`` are one folder though their resolved paths differ), else by their
    resolved paths, ignoring case where the file system does."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    ra, rb = str(a.resolve()), str(b.resolve())
    return ra == rb or (_CASE_INSENSITIVE and ra.casefold() == rb.casefold())


def labeled_set_layout(labeled_dir: PathLike, labels_dir: Optional[PathLike] = None) -> LabeledSetLayout:
    """The layout of the labeled set named as ``semisupseg train`` takes it (``--labeled DIR [--labels DIR]``).

    A folder that does not exist yet, or is empty, becomes a new MSD set (``imagesTr``/``labelsTr``). Raises
    :class:`semisupseg.errors.InputError` for the LA ``<id>/mri_norm2.h5`` layout (its files cannot take a case
    written from Slicer) and for a folder of images without ``imagesTr`` when no labels folder is given."""
    from semisupseg.errors import InputError
    from semisupseg.io import WRITE_SUFFIXES, strip_suffix, volume_suffix

    root = Path(labeled_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError("the labeled set must be a folder", root)
    for folder in [Path(d).expanduser() for d in (labeled_dir, labels_dir) if d]:
        above = next((p for p in folder.parents if p.exists()), None)
        if not folder.exists() and above is not None and not above.is_dir():
            raise InputError(f"cannot make the labeled set's folder here: {above} is a file, not a folder", folder)
    if labels_dir:
        layout = LabeledSetLayout(root, Path(labels_dir).expanduser())
        if _same_folder(layout.labels, layout.images):  # image and label would share one file name
            raise InputError("the labels folder is the images folder: label maps need a folder of their own",
                             layout.labels)
    elif not root.exists() or (root / "imagesTr").is_dir() or not any(p for p in root.iterdir()
                                                                       if not p.name.startswith(".")):
        layout = LabeledSetLayout(root / "imagesTr", root / "labelsTr", root=root)
    elif any((p / "mri_norm2.h5").is_file() for p in root.iterdir() if p.is_dir()):
        raise InputError("this labeled set uses the LA layout (<id>/mri_norm2.h5): a case from Slicer cannot be added "
                         "to it; add it to an imagesTr/labelsTr folder, or an images folder with its labels folder",
                         root)
    else:
        raise InputError("the folder holds no imagesTr/ and no labels folder was given: choose the labels folder "
                         "too (images and labels with matching names)", root)
    images = _volume_files(layout.images)
    labels = _volume_files(layout.labels)
    layout.label_files = len(labels)
    suffixes = Counter(volume_suffix(p) for p in images)
    common = [s for s, _ in suffixes.most_common() if s in WRITE_SUFFIXES]
    layout.suffix = common[0] if common else DEFAULT_SUFFIX
    image_ids = [strip_suffix(p) for p in images]
    label_ids = {strip_suffix(p) for p in labels}
    layout.channel_suffix = bool(image_ids) and all(i.endswith(_CHANNEL) for i in image_ids) and \
        not any(i in label_ids for i in image_ids)
    bases = {i[: -len(_CHANNEL)] if layout.channel_suffix and i.endswith(_CHANNEL) else i for i in image_ids}
    layout.taken = bases | label_ids | {re.sub(r"_\d{4}$", "", i) for i in image_ids}
    return layout


#: longest case id (file names hold 255 bytes; the id gets a channel suffix, a file suffix and maybe ``_NN``)
MAX_CASE_ID = 100
#: names Windows reserves in every folder (with any suffix): such an id gets ``_case`` appended
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def new_case_name(layout: LabeledSetLayout, wanted: Optional[str]) -> str:
    """A case id not used by any image or label of the set: ``wanted`` made file-safe on every system (``case``
    when empty; at most :data:`MAX_CASE_ID` characters; Windows' reserved names such as ``CON`` get ``_case``), then
    ``_2``, ``_3``... until free."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (wanted or "").strip()).strip("._")[:MAX_CASE_ID].rstrip("._") or "case"
    if base.endswith(_CHANNEL):
        base = base[: -len(_CHANNEL)] or "case"
    if base.split(".")[0].upper() in _WINDOWS_RESERVED:
        base += "_case"
    name, n = base, 1
    while name in layout.taken or name.lower() in {t.lower() for t in layout.taken}:
        n += 1
        name = f"{base}_{n}"
    return name


def _segments(segmentation_node) -> List[Tuple[str, str, Optional[int]]]:
    """``[(segment id, name, tagged label value or None)]`` in segment order."""
    import vtk

    from SemiSupSegLib.results import LABEL_VALUE_TAG

    segmentation = segmentation_node.GetSegmentation()
    out = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        tag = vtk.reference("")
        value = None
        if segment.GetTag(LABEL_VALUE_TAG, tag) and str(tag).strip().lstrip("-").isdigit():
            value = int(str(tag))
        out.append((segment_id, segment.GetName(), value))
    return out


def set_classes(layout: LabeledSetLayout, class_names: Optional[Sequence[str]] = None,
                label_values: Optional[Sequence[int]] = None):
    """The classes of the set (``semisupseg.data.cases.ClassInfo``): its ``dataset.json``, else the given names and
    values (values default to 0, 1, 2...), else ``None``."""
    from semisupseg.data.cases import ClassInfo, read_dataset_json

    if layout.dataset_json is not None and layout.dataset_json.is_file():
        return read_dataset_json(layout.dataset_json)
    if class_names:
        values = list(label_values) if label_values is not None else list(range(len(class_names)))
        return ClassInfo(list(class_names), values)
    return None


def segment_label_values(segments: Sequence[Tuple[str, str, Optional[int]]], classes) -> Dict[str, int]:
    """``{segment id: label value}``: by name (case-insensitive, the background excluded), else by the segment's
    label-value tag when it is one of the classes' values, else — one segment, one foreground class — that class.
    Raises :class:`semisupseg.errors.InputError` naming the segments that match no class."""
    from semisupseg.errors import InputError

    by_name = {n.strip().lower(): v for n, v in zip(classes.names, classes.label_values) if v != 0}
    foreground = [v for v in classes.label_values if v != 0]
    out: Dict[str, int] = {}
    unmatched = []
    for segment_id, name, tagged in segments:
        key = (name or "").strip().lower()
        if key in by_name:
            out[segment_id] = by_name[key]
        elif tagged is not None and tagged in foreground:
            out[segment_id] = tagged
        else:
            unmatched.append((segment_id, name))
    if unmatched and len(segments) == 1 and len(foreground) == 1:
        out[unmatched[0][0]] = foreground[0]
        unmatched = []
    if unmatched:
        known = ", ".join(n for n, v in zip(classes.names, classes.label_values) if v != 0)
        raise InputError(f"segment(s) {', '.join(repr(n) for _, n in unmatched)} match no class of the labeled set "
                         f"({known}): rename each segment to its class name")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# scene -> arrays
# ----------------------------------------------------------------------------------------------------------------------

def image_volume(volume_node):
    """The scan of ``volume_node`` as a :class:`semisupseg.volume.Volume` with its voxels in their own type (not
    float32 as ``volume_from_node`` gives them) and its exact geometry."""
    from SemiSupSegLib.scene import volume_from_node

    geometry = volume_from_node(volume_node)
    from vtk.util import numpy_support

    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    native = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0]).copy()
    return geometry.with_array(native)


def segment_mask(scene, segmentations_logic, segmentation_node, segment_id: str, reference_node) -> np.ndarray:
    """One segment as a boolean ``(z, y, x)`` array on ``reference_node``'s grid (Slicer's export into the
    reference geometry); the temporary nodes are removed."""
    import slicer
    import vtk

    from SemiSupSegLib.scene import volume_from_node

    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("export"))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        ok = segmentations_logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_node,
                                                              slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise RuntimeError(f"Slicer could not export segment {segment_id!r} of '{segmentation_node.GetName()}'")
        return volume_from_node(labelmap).array != 0
    finally:
        for node in reversed([scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]):
            if node.GetID() not in before:
                scene.RemoveNode(node)


def voxels_outside(segmentation_node, segment_id: str, volume_node) -> Tuple[int, int]:
    """``(outside, total)``: how many of the segment's own voxels (its binary labelmap, on its own grid) have their
    centre outside ``volume_node``'s image, and how many it has; ``(0, 0)`` when the segment has no binary labelmap
    (e.g. closed surfaces only). Both nodes are in the same frame (the caller refuses parent transforms)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if labelmap is None or labelmap.GetPointData().GetScalars() is None:
        return 0, 0
    lo = np.array(labelmap.GetExtent()[0::2])
    dims = np.array(labelmap.GetExtent()[1::2]) - lo + 1
    if np.any(dims < 1):
        return 0, 0
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    k, j, i = np.nonzero(voxels == segment.GetLabelValue())
    if not len(i):
        return 0, 0
    to_world, ras_to_ijk = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(to_world)
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    matrix = slicer.util.arrayFromVTKMatrix(ras_to_ijk) @ slicer.util.arrayFromVTKMatrix(to_world)
    ijk = (matrix @ np.stack([i + lo[0], j + lo[1], k + lo[2], np.ones(len(i))]))[:3]
    extent = np.array(volume_node.GetImageData().GetExtent(), dtype=np.float64).reshape(3, 2)
    inside = np.all((ijk >= extent[:, :1] - 0.5) & (ijk <= extent[:, 1:] + 0.5), axis=0)
    return int(np.count_nonzero(~inside)), int(len(i))


# ----------------------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------------------

def _publish(tmp: Path, final: Path) -> None:
    """Move the complete file ``tmp`` to ``final`` without ever replacing an existing ``final``."""
    from semisupseg.errors import OutputExistsError

    try:
        os.link(tmp, final)  # atomic, and fails when final exists
    except FileExistsError:
        raise OutputExistsError("a file of that name appeared meanwhile; nothing was replaced", final) from None
    except OSError:  # a file system without hard links
        if final.exists():
            raise OutputExistsError("a file of that name appeared meanwhile; nothing was replaced", final) from None
        os.rename(tmp, final)  # Windows: fails instead of replacing
        return
    tmp.unlink()


def _write_dataset_json(layout: LabeledSetLayout, classes, notes: List[str]) -> None:
    from semisupseg.errors import OutputExistsError
    from semisupseg.fileio import write_text_atomic

    path = layout.dataset_json
    if path is None or path.exists():
        return
    data = {"name": layout.root.name if layout.root is not None else "", "description": "labeled set made in Slicer",
            "tensorImageSize": "3D", "labels": {str(v): n for n, v in zip(classes.names, classes.label_values)}}
    try:
        write_text_atomic(json.dumps(data, indent=1) + "\n", path)
        notes.append(f"wrote {path.name} with the classes {', '.join(classes.names[1:])}")
    except OutputExistsError:
        pass


def add_to_labeled_set(scene, segmentations_logic, volume_node, segmentation_node, labeled_dir: PathLike,
                       labels_dir: Optional[PathLike] = None, class_names: Optional[Sequence[str]] = None,
                       label_values: Optional[Sequence[int]] = None, case_name: Optional[str] = None,
                       unlabeled_dirs: Sequence[PathLike] = ()) -> AddedCase:
    """Write ``volume_node`` and ``segmentation_node`` into the labeled set as a new case (see the module docstring).

    Args:
        scene, segmentations_logic: the MRML scene and ``vtkSlicerSegmentationsModuleLogic``.
        labeled_dir, labels_dir: the set, as given to ``semisupseg train --labeled [--labels]``.
        class_names, label_values: the classes to map segment names to when the set has no ``dataset.json`` (the
            model's, from its card; background first).
        case_name: the wanted case id (default: the volume node's name); made unique.
        unlabeled_dirs: the run's unlabeled folders: a note says when the scan's file is in one of them (training
            would then see it twice).

    Raises :class:`semisupseg.errors.InputError` with one line saying what is wrong; the set is unchanged then.
    """
    from semisupseg.data.cases import Case, ClassInfo, read_case
    from semisupseg.errors import InputError
    from semisupseg.io import check_scan, write_volume

    if volume_node is None:
        raise InputError("choose the volume to add")
    if segmentation_node is None:
        raise InputError("choose the segmentation to add")
    for node in (volume_node, segmentation_node):
        if node.GetParentTransformNode() is not None:
            raise InputError(f"'{node.GetName()}' is under a transform: harden it first (Data module, right click, "
                             "'Harden transform') so that the files get the geometry shown")
    segments = _segments(segmentation_node)
    if not segments:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segment")
    layout = labeled_set_layout(labeled_dir, labels_dir)
    notes: List[str] = []
    classes = set_classes(layout, class_names, label_values)
    new_classes = False
    if classes is None:
        if layout.label_files:
            raise InputError("the labeled set has no dataset.json, so its classes are unknown: choose the model whose "
                             "classes the segments are, or add a dataset.json", layout.labels)
        names = Counter((name or "").strip().lower() for _, name, _ in segments)
        twins = [name for _, name, _ in segments if names[(name or "").strip().lower()] > 1]
        if twins:  # classes are matched by name, case-insensitively: they would become one class
            raise InputError(f"segments {', '.join(repr(n) for n in twins)} of '{segmentation_node.GetName()}' have "
                             "the same name but for case: rename them so that each class has its own name")
        tags = [v for _, _, v in segments]
        values = tags if all(v is not None and v > 0 for v in tags) and len(set(tags)) == len(tags) \
            else list(range(1, len(segments) + 1))
        order = sorted(range(len(segments)), key=lambda i: values[i])
        classes = ClassInfo(["background"] + [segments[i][1] for i in order], [0] + [values[i] for i in order])
        new_classes = True
    mapping = segment_label_values(segments, classes)

    image = image_volume(volume_node)
    check_scan(image, f"volume '{volume_node.GetName()}'", "learn from")  # before anything is written
    dtype = np.uint8 if max(classes.label_values) < 256 else np.uint16
    label = np.zeros(image.array.shape, dtype=dtype)
    covered = np.zeros(image.array.shape, dtype=bool)
    overlap = 0
    for segment_id, name, _ in segments:
        mask = segment_mask(scene, segmentations_logic, segmentation_node, segment_id, volume_node)
        if mask.shape != label.shape:
            raise InputError(f"segment '{name}' was exported on a {mask.shape[::-1]} grid instead of the volume's "
                             f"{label.shape[::-1]}")
        outside, total = voxels_outside(segmentation_node, segment_id, volume_node)
        if total and outside == total:
            raise InputError(f"segment '{name}' lies wholly outside volume '{volume_node.GetName()}': was it drawn "
                             "on another scan? Choose the volume it belongs to")
        if outside:
            notes.append(f"segment '{name}': {outside} of its {total} voxels ({100 * outside / total:.0f} %) lie "
                         f"outside volume '{volume_node.GetName()}' and are not in the case: check that the "
                         "segmentation belongs to this scan")
        if not mask.any():
            notes.append(f"segment '{name}' is empty")
        overlap += int(np.count_nonzero(mask & covered))
        covered |= mask
        label[mask] = mapping[segment_id]
    if overlap:
        notes.append(f"{overlap} voxels are in more than one segment: each has the value of the last of them")
    if not label.any():
        notes.append("the label map is empty: the case only teaches background")

    case_id = new_case_name(layout, case_name or volume_node.GetName())
    image_name = f"{case_id}{_CHANNEL if layout.channel_suffix else ''}{layout.suffix}"
    label_name = f"{case_id}{layout.suffix}"
    final_image, final_label = layout.images / image_name, layout.labels / label_name
    for path in (final_image, final_label):
        if path.exists():  # new_case_name saw the folder a moment ago
            raise InputError("exists already; nothing was written", path)
    written: List[Path] = []
    scratch: List[Path] = []
    try:
        for folder in (layout.images, layout.labels):
            folder.mkdir(parents=True, exist_ok=True)
            scratch.append(Path(tempfile.mkdtemp(prefix=".semisupseg-add-", dir=folder)))
        tmp_image = write_volume(image, scratch[0] / image_name)
        tmp_label = write_volume(image.with_array(label), scratch[1] / label_name)
        _publish(tmp_image, final_image)
        written.append(final_image)
        _publish(tmp_label, final_label)
        written.append(final_label)
        _check_written(Case(case_id, final_image, final_label), classes, image.array, label, read_case)
    except BaseException as exc:
        for path in written:
            try:
                path.unlink()
            except OSError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, InputError):  # a full disk, a read-only place
            raise InputError(f"cannot write into the labeled set ({exc.strerror or exc}); nothing was added",
                             exc.filename or layout.images) from exc
        raise
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
    if new_classes:
        notes.append("the classes come from the segments: " + ", ".join(
            f"{n} = {v}" for n, v in zip(classes.names[1:], classes.label_values[1:])))
        _write_dataset_json(layout, classes, notes)
    notes += _unlabeled_notes(volume_node, unlabeled_dirs)
    if layout.root is not None and (layout.root / "splits.json").is_file():
        notes.append(f"the set has a splits.json: training uses the new case only once '{case_id}' is in its lists")
    names = {sid: name for sid, name, _ in segments}
    values, counts = np.unique(label, return_counts=True)
    return AddedCase(case_id, final_image, final_label, {names[s]: v for s, v in mapping.items()},
                     {int(v): int(c) for v, c in zip(values, counts)}, classes.to_dict(), notes)


def _check_written(case, classes, image: np.ndarray, label: np.ndarray, read_case) -> None:
    """Read the case back as training will and compare it with what was meant."""
    from semisupseg.errors import InputError

    read_image, read_label = read_case(case, classes)
    if read_label is None or read_image.array.shape != image.shape or read_label.array.shape != label.shape:
        raise InputError("the written case does not read back with its shape", case.label_path)
    if not np.array_equal(read_image.array, image.astype(read_image.array.dtype)):
        raise InputError("the written image does not read back with the volume's voxels", case.image_path)
    if not np.array_equal(read_label.array.astype(np.int64), label.astype(np.int64)):
        raise InputError("the written label map does not read back with the segmentation's values", case.label_path)


def _unlabeled_notes(volume_node, unlabeled_dirs: Sequence[PathLike]) -> List[str]:
    storage = volume_node.GetStorageNode()
    source = storage.GetFileName() if storage is not None else None
    if not source:
        return []
    source_path = Path(source).resolve()
    for folder in unlabeled_dirs:
        folder_path = Path(folder).expanduser().resolve()
        if folder_path in source_path.parents:
            return [f"the scan's file is also in the unlabeled folder {folder_path}: move it out of there, or training "
                    "uses it both as labeled and as unlabeled"]
    return []


__all__ = ["AddedCase", "LabeledSetLayout", "MAX_CASE_ID", "add_to_labeled_set", "image_volume", "labeled_set_layout",
           "new_case_name", "segment_label_values", "segment_mask", "set_classes", "voxels_outside"]
