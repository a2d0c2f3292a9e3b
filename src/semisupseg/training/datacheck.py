"""Check the training data a :class:`~semisupseg.training.config.DataConfig` names, before anything trains.

:func:`check_train_data` runs the checks ``semisupseg train`` runs while reading its data — the same functions:
the cases and their roles come from :func:`semisupseg.training.loading.resolve_cases` (discovery, image/label
pairing by name, split file, validation hold-out) and every file is read with :func:`semisupseg.data.read_case`
(readable, label whole-numbered, label on the image's grid, label values among the declared classes); then the
classes, the channel count and the common voxel spacing are checked as the engine does. Warnings (training
starts, the user may not expect what happens) come from the same functions as the notes ``train`` records: a
validation hold-out taking half the labeled cases or more, a scan given both as labeled and unlabeled (dropped from
the unlabeled pool), and — classes inferred without ``dataset.json`` — a label value in few cases and voxels
(:func:`semisupseg.training.loading.stray_label_problems`). Unlike training it does not
stop at the first problem: every problem is collected, one line each naming its file. It backs
``semisupseg check-data`` and the *Check data* button of the Slicer training panel (which reads its ``--json``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback, no_progress
from semisupseg.training.config import DataConfig

#: roles of a case in a run, in the order they are listed
ROLES = ("labeled", "unlabeled", "validation")


@dataclass
class CaseReport:
    """One case as found: its ``role`` (``labeled``/``unlabeled``/``validation``), files, and — when it could be
    read — ``size_xyz`` (voxels), ``spacing_xyz`` (mm), ``channels`` and the ``label_values`` present in its label.
    ``ok`` is ``False`` when reading it raised a problem."""

    case_id: str
    role: str
    image: List[str]
    label: Optional[str] = None
    size_xyz: Optional[List[int]] = None
    spacing_xyz: Optional[List[float]] = None
    channels: Optional[int] = None
    label_values: Optional[List[int]] = None
    ok: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return {"case": self.case_id, "role": self.role, "image": self.image, "label": self.label,
                "size_xyz": self.size_xyz, "spacing_xyz": self.spacing_xyz, "channels": self.channels,
                "label_values": self.label_values, "ok": self.ok}


@dataclass
class DataReport:
    """What :func:`check_train_data` found: ``cases`` (with their roles), the ``classes`` (``names`` and
    ``label_values``, declared or inferred; ``None`` when unknown), ``problems``
    (:class:`semisupseg.data.DataProblem`, errors and warnings) and ``notes`` (how the cases were chosen).
    :attr:`usable`: no error, ``semisupseg train`` would start."""

    cases: List[CaseReport] = field(default_factory=list)
    classes: Optional[Dict[str, list]] = None
    problems: List[Any] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: the settings training would derive from the data (:func:`semisupseg.data.fingerprint.plan_for`) and
    #: their lines for people; ``None`` when not computed (unusable data)
    plan: Optional[Dict[str, Any]] = None
    plan_lines: List[str] = field(default_factory=list)

    @property
    def errors(self) -> List[Any]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[Any]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def usable(self) -> bool:
        return not self.errors

    def ids(self, role: str) -> List[str]:
        """Case ids of one role, in the order training uses them."""
        return [c.case_id for c in self.cases if c.role == role]

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"usable": self.usable}
        for role in ROLES:
            out[role] = [c.to_dict() for c in self.cases if c.role == role]
        out.update({"classes": self.classes, "problems": [p.to_dict() for p in self.problems],
                    "errors": len(self.errors), "warnings": len(self.warnings), "notes": list(self.notes),
                    "plan": self.plan, "plan_lines": list(self.plan_lines)})
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DataReport":
        """The report :meth:`to_dict` wrote (``check-data --json`` / ``--report``): ``from_dict(r.to_dict())``
        gives ``r`` back, ``to_dict`` of it the same object."""
        from semisupseg.data.cases import DataProblem

        cases = [CaseReport(case_id=c["case"], role=c["role"], image=list(c["image"]), label=c.get("label"),
                            size_xyz=c.get("size_xyz"), spacing_xyz=c.get("spacing_xyz"), channels=c.get("channels"),
                            label_values=c.get("label_values"), ok=bool(c.get("ok", True)))
                 for role in ROLES for c in data.get(role, [])]
        problems = [DataProblem(p["message"], p.get("path"), p.get("case"), p.get("severity", "error"))
                    for p in data.get("problems", [])]
        return cls(cases=cases, classes=data.get("classes"), problems=problems, notes=list(data.get("notes", [])),
                   plan=data.get("plan"), plan_lines=list(data.get("plan_lines", [])))

    def text(self) -> str:
        """The report as the CLI prints it: cases per role, classes, notes, a per-case table, then the problems,
        one line each, and a verdict."""
        lines: List[str] = []
        for role in ROLES:
            ids = self.ids(role)
            lines.append(f"{role} ({len(ids)}): {', '.join(ids) if ids else '-'}")
        if self.classes is not None:
            lines.append("classes: " + ", ".join(f"{v} {n}" for v, n in zip(self.classes["label_values"],
                                                                            self.classes["names"])))
        lines.extend(f"  {n}" for n in self.notes)
        if self.cases:
            width = max(len("case"), *(len(c.case_id) for c in self.cases))
            lines.append(f"{'case':<{width}}  {'role':<10}  {'size x,y,z':<14}  {'spacing x,y,z mm':<20}  labels")
            for c in self.cases:
                size = "x".join(str(v) for v in c.size_xyz) if c.size_xyz else "?"
                sp = ",".join(f"{v:g}" for v in c.spacing_xyz) if c.spacing_xyz else "?"
                labels = ",".join(str(v) for v in c.label_values) if c.label_values is not None else "-"
                if c.channels and c.channels > 1:
                    size += f" ({c.channels} ch)"
                lines.append(f"{c.case_id:<{width}}  {c.role:<10}  {size:<14}  {sp:<20}  {labels}")
        if self.plan_lines:
            lines.append("training settings from the data:")
            lines.extend(f"  {ln}" for ln in self.plan_lines)
        for p in self.problems:
            lines.append(f"{p.severity}: {p.line}")
        if self.usable:
            extra = f" ({len(self.warnings)} warning(s) above)" if self.warnings else ""
            lines.append(f"the data can be used for training{extra}")
        else:
            lines.append(f"{len(self.errors)} error(s): training would not start")
        return "\n".join(lines)


def check_train_data(cfg: DataConfig, with_unlabeled: bool = True, progress: ProgressCallback = no_progress,
                     cancel: Optional[CancelToken] = None) -> DataReport:
    """Check every case ``cfg`` names, reading each file once (images fully: an unreadable or truncated file is
    found). ``with_unlabeled=False``: leave the unlabeled pool out, as training does for methods that use labeled
    data only. Never raises for problems in the data (they are in the report); honours ``cancel``."""
    from semisupseg.data.cases import ClassInfo, DataProblem, read_case
    from semisupseg.training.loading import (classes_folder, resolve_cases, spacing_problem, stray_label_problems,
                                             training_orientation)

    problems: List[Any] = []
    try:
        ds, notes = resolve_cases(cfg, with_unlabeled, problems)
        declared = ds.classes
        orientation_note = training_orientation(ds)[1]  # what training will do about scans stored another way
        notes = notes + ([orientation_note] if orientation_note else [])
        todo = [("labeled", c) for c in ds.labeled] + [("unlabeled", c) for c in ds.unlabeled] + \
            [("validation", c) for c in ds.val]
    except InputError as exc:  # the set cannot be split (split file, folders): still check every file found
        problems.append(DataProblem.from_error(exc))
        todo, declared = _every_case_found(cfg, problems)
        notes = ["the cases could not be assigned to labeled / unlabeled / validation (see the errors); every "
                 "file found is checked, cases with a label file listed as labeled"] if todo else []
    h5_spacing = tuple(float(s) for s in cfg.h5_spacing)
    rows: List[CaseReport] = []
    counts: Dict[str, Dict[int, int]] = {}  # voxels per label value of each labeled / validation case read
    voxels: Dict[str, int] = {}
    for i, (role, case) in enumerate(todo):
        if cancel is not None:
            cancel.raise_if_cancelled("data check")
        row = CaseReport(case.case_id, role, [str(p) for p in case.channel_paths],
                         None if case.label_path is None else str(case.label_path))
        try:
            image, label = read_case(case, declared, with_label=role != "unlabeled", h5_spacing=h5_spacing)
        except InputError as exc:
            problems.append(DataProblem.from_error(exc, case.case_id))
            row.ok = False
        else:
            row.size_xyz = [int(v) for v in image.size_xyz]
            row.spacing_xyz = [float(v) for v in image.spacing]
            row.channels = 1 if image.array.ndim == 3 else int(image.array.shape[0])
            if row.channels != int(cfg.in_channels):
                problems.append(DataProblem(f"{row.channels} channel(s), the config says data.in_channels="
                                            f"{cfg.in_channels}", row.image[0], case.case_id))
            if label is not None:
                values, found = np.unique(label.array, return_counts=True)
                row.label_values = [int(v) for v in values]
                counts[case.case_id] = {int(v): int(k) for v, k in zip(values, found)}
                voxels[case.case_id] = int(label.array.size)
                if row.label_values == [0]:
                    problems.append(DataProblem("label holds only the background (0): nothing to learn from this "
                                                "case", row.label, case.case_id, "warning"))
        rows.append(row)
        progress((i + 1) / max(len(todo), 1), f"checked {case.case_id}")

    classes = declared
    if classes is None:
        problems += stray_label_problems(counts, voxels, {r.case_id: r.label for r in rows}, classes_folder(cfg))
        values = sorted({v for r in rows if r.label_values is not None for v in r.label_values})
        if values:
            try:
                classes = ClassInfo.from_values(values)
            except InputError as exc:
                problems.append(DataProblem.from_error(exc))
    if classes is not None and cfg.num_classes is not None and classes.num_classes != int(cfg.num_classes):
        problems.append(DataProblem(f"data.num_classes={cfg.num_classes} but the data has {classes.num_classes} "
                                    f"classes ({', '.join(classes.names)}; label values {classes.label_values})"))
    problem = spacing_problem({r.case_id: r.spacing_xyz for r in rows if r.spacing_xyz is not None}, cfg.spacing)
    if problem is not None:
        problems.append(DataProblem(problem))
    return DataReport(rows, None if classes is None else classes.to_dict(), problems, notes)


def _every_case_found(cfg: DataConfig, problems: List[Any]):
    """``([(role, Case)], declared classes)`` of every case in the folders of ``cfg`` when no split can be made
    (role ``labeled`` when the case has a label file); pairing problems were recorded already."""
    from semisupseg.data.cases import discover_cases, discover_unlabeled, read_dataset_json
    from semisupseg.training.loading import dataset_spec

    found: List[Any] = []
    declared = None
    try:
        spec = dataset_spec(cfg)
        if spec.root is not None or spec.images is not None:
            found += discover_cases(spec.root, spec.images, spec.labels, allow_missing_labels=True, problems=[])
        for folder in spec.unlabeled:
            found += discover_unlabeled(folder, problems=[])
        if spec.label_values is None and spec.class_names is None and spec.root is not None:
            from pathlib import Path

            if (Path(spec.root) / "dataset.json").is_file():
                declared = read_dataset_json(Path(spec.root) / "dataset.json")
    except InputError:
        pass  # the folder-level error is the one already reported
    return [("labeled" if c.labeled else "unlabeled", c) for c in found], declared


__all__ = ["CaseReport", "DataReport", "ROLES", "check_train_data"]
