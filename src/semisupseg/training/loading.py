"""Read the training cases a :class:`~semisupseg.training.config.DataConfig` names into a :class:`TrainData`.

Discovery, splits, reading, resampling and normalisation are :mod:`semisupseg.data`'s (``build_dataset``,
``load_dataset``); this module only adds the engine's rule for the validation hold-out (see ``DataConfig``).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback, no_progress
from semisupseg.training.config import DataConfig
from semisupseg.training.data import CaseArrays, TrainData, no_training_case


def dataset_spec(cfg: DataConfig):
    """The :class:`semisupseg.data.DatasetSpec` that ``cfg`` names (what ``train``, ``check-data`` and
    ``--num-labeled FRACTION`` discover cases from). Raises :class:`InputError` saying what is expected when no
    labeled data is given."""
    from semisupseg.data import DatasetSpec

    if cfg.labeled is None:
        expected = ("--labeled DIR (data.labeled): a dataset folder with imagesTr/ + labelsTr/ (or LA "
                    "<id>/mri_norm2.h5 sub-folders), or a folder of images with --labels DIR (data.labels) for their "
                    "label maps")
        if cfg.unlabeled:
            raise InputError(f"no labeled data given: --unlabeled ({', '.join(str(u) for u in cfg.unlabeled)}) "
                             f"only adds images without labels, and training needs labeled cases too: {expected}")
        raise InputError(f"no labeled data given: {expected}")
    root, images = (None, cfg.labeled) if cfg.labels is not None else (cfg.labeled, None)
    return DatasetSpec(root=root, images=images, labels=cfg.labels, unlabeled=list(cfg.unlabeled),
                       split=cfg.split, labeled_key=cfg.split_labeled, num_labeled=cfg.num_labeled,
                       train_key=cfg.split_all, val_key=cfg.split_val, class_names=cfg.class_names,
                       label_values=cfg.label_values, h5_spacing_xyz=tuple(float(s) for s in cfg.h5_spacing))


def _hold_out(ds, cfg: DataConfig, spec, collect: bool = False, problems: Optional[list] = None) -> List[str]:
    """Move validation cases into ``ds.val`` following ``cfg.validation``; returns notes for ``data.json``.
    When the validation cases taken from the labeled cases are half of them or more, a warning (naming the counts
    and ``--validation``) goes to ``problems`` (to the notes when ``None``)."""
    from semisupseg.data import discover_cases
    from semisupseg.data.cases import DataProblem

    notes: List[str] = []
    if ds.val:
        notes.append(f"validation: the split's {cfg.split_val!r} list ({len(ds.val)} cases)")
        return notes
    want = cfg.validation
    if isinstance(want, int) and want == 0:
        notes.append("validation: disabled (data.validation = 0)")
        return notes
    full = {c.case_id: c for c in discover_cases(spec.root, spec.images, spec.labels, allow_missing_labels=True,
                                                 problems=[] if collect else None)}  # already reported
    pool_with_labels = [c.case_id for c in ds.unlabeled if c.case_id in full and full[c.case_id].label_path]
    if isinstance(want, int):
        if len(pool_with_labels) >= want:
            ids = pool_with_labels[-want:]
            notes.append(f"validation: the last {want} cases of the unlabeled pool (their labels are read only "
                         "for validation)")
        else:
            if want >= len(ds.labeled):
                raise InputError(no_training_case(want, len(ds.labeled)))
            ids = [c.case_id for c in ds.labeled[-want:]]
            notes.append(f"validation: the last {want} labeled cases (the unlabeled pool has no labels)")
    else:
        ids = [str(v) for v in want]
        known = {c.case_id for c in ds.labeled} | set(pool_with_labels)
        missing = [i for i in ids if i not in known]
        if missing:
            raise InputError(f"validation case(s) {missing} are neither labeled cases nor pool cases with labels")
        notes.append(f"validation: the listed cases {ids}")
    idset = set(ids)
    n_labeled = len(ds.labeled)
    ds.val = [full[i] for i in ids]
    ds.labeled = [c for c in ds.labeled if c.case_id not in idset]
    ds.unlabeled = [c for c in ds.unlabeled if c.case_id not in idset]
    if not ds.labeled:
        raise InputError(no_training_case(ids, n_labeled))
    held = n_labeled - len(ds.labeled)
    if held and 2 * held >= n_labeled:
        fix = "--validation 1 or --validation 0 (no validation)" if held > 1 else "--validation 0 (no validation)"
        problem = DataProblem(f"data.validation={_shown(want)} holds out {held} of the {n_labeled} labeled cases for "
                              f"validation, leaving {len(ds.labeled)} to train on: with so few labeled cases use "
                              f"{fix} to train on more", severity="warning")
        if problems is not None:
            problems.append(problem)
        else:
            notes.append(f"warning: {problem.line}")
    return notes


def _shown(want) -> str:
    return str(want) if isinstance(want, int) else ",".join(str(v) for v in want)


def resolve_cases(cfg: DataConfig, with_unlabeled: bool = True, problems: Optional[list] = None):
    """The cases ``cfg`` names, split into labeled / unlabeled / validation by the rules of :class:`DataConfig`
    (discovery, split file, validation hold-out, ``max_unlabeled``); nothing is read yet. Returns
    ``(semisupseg.data.Dataset, notes)``. ``with_unlabeled=False`` drops the unlabeled pool (methods that do not
    use it). ``problems``: a list collecting per-file pairing problems instead of raising at the first
    (:func:`semisupseg.data.discover_cases`); without it, all pairing problems are raised together (with a
    set-level error such as a split naming absent cases, when there is one). Training and ``semisupseg
    check-data`` both start here."""
    from semisupseg.data import build_dataset
    from semisupseg.data.cases import DataProblem, raise_problems

    if problems is None:
        found: List[DataProblem] = []
        try:
            result = resolve_cases(cfg, with_unlabeled, found)
        except InputError as exc:
            if not any(p.severity == "error" for p in found):
                raise
            found.append(DataProblem.from_error(exc))
            raise_problems(found)
            raise
        raise_problems(found)
        return result
    spec = dataset_spec(cfg)
    ds = build_dataset(spec, problems=problems, dedupe_unlabeled=True)  # a scan is labeled or unlabeled, once
    notes = list(ds.notes) + _hold_out(ds, cfg, spec, collect=True, problems=problems)
    if cfg.max_unlabeled is not None:
        ds.unused += ds.unlabeled[int(cfg.max_unlabeled):]
        ds.unlabeled = ds.unlabeled[: int(cfg.max_unlabeled)]
    if not with_unlabeled:
        notes.append(f"unlabeled pool of {len(ds.unlabeled)} cases not read: the method uses labeled data only")
        ds.unused += ds.unlabeled
        ds.unlabeled = []
    return ds, notes


def classes_folder(cfg: DataConfig) -> Optional[str]:
    """The folder whose ``dataset.json`` declares the classes (a dataset folder; ``None`` for images + labels)."""
    return None if cfg.labeled is None or cfg.labels is not None else str(cfg.labeled)


def spacing_problem(spacings_xyz: Dict[str, Sequence[float]], target: Optional[Sequence[float]]) -> Optional[str]:
    """Why cases with these voxel sizes (case id -> x, y, z mm) cannot share one training grid, or ``None``.
    With a ``target`` spacing (``data.spacing``) every case is resampled to it; without, they must agree."""
    if target is not None:
        return None
    groups: Dict[Tuple[float, ...], List[str]] = {}
    for cid, sp in spacings_xyz.items():
        groups.setdefault(tuple(round(float(v), 4) for v in sp), []).append(cid)
    if len(groups) <= 1:
        return None
    shown = "; ".join(f"{list(k)} mm: {len(v)} case(s), e.g. {v[0]}" for k, v in sorted(groups.items())[:4])
    return (f"the cases have different voxel spacings ({shown}); set data.spacing (x y z mm) to resample them "
            "to one grid")


#: a label value found in fewer than half of the labeled cases and in less than this fraction of their voxels is
#: reported as a possible stray value (:func:`stray_label_problems`)
STRAY_VOXEL_FRACTION = 1e-3


def stray_label_problems(counts: Dict[str, Dict[int, int]], voxels: Dict[str, int],
                         label_paths: Optional[Dict[str, Optional[str]]] = None,
                         root: Optional[str] = None) -> list:
    """Warnings (:class:`semisupseg.data.DataProblem`) for label values that look like stray voxels rather than a
    class, for data whose classes are inferred from the values found (no ``dataset.json``, no
    ``data.label_values``): there every value becomes a class, so 5 voxels of a 7 painted by mistake add a class
    ``7`` silently. ``counts``: per labeled (and validation) case id, voxels per label value; ``voxels``: the
    case's voxel count. The rule: a non-zero value present in **fewer than half** of the cases (a real class is
    usually in most of them) **and** in less than :data:`STRAY_VOXEL_FRACTION` (0.1 %) of the voxels of the cases
    holding it (a class that is absent from some cases but large where present is not flagged). With fewer than 3
    cases nothing is flagged. A warning, never an error: a rare small structure is possible. One line per value,
    naming the cases, their voxel counts and the fix (a ``dataset.json`` with the labels in ``root``, or
    ``data.label_values``)."""
    from semisupseg.data.cases import DataProblem

    n = len(counts)
    values = sorted({int(v) for c in counts.values() for v, k in c.items() if k > 0} - {0})
    out = []
    stray = []
    holders_of = {v: [cid for cid, c in counts.items() if c.get(v, 0) > 0] for v in values}  # the cases holding v
    for v in values:
        holders = holders_of[v]
        found = sum(counts[cid][v] for cid in holders)
        if 2 * len(holders) < n and found < STRAY_VOXEL_FRACTION * sum(voxels[cid] for cid in holders):
            stray.append((v, holders, found))
    keep = [0] + [v for v in values if v not in {s[0] for s in stray}]
    for v, holders, found in stray:
        where = ", ".join(f"{cid}: {counts[cid][v]} voxels" for cid in holders[:3])
        where += f" and {len(holders) - 3} more cases" if len(holders) > 3 else ""
        fix = f"--set data.label_values=[{','.join(map(str, keep))}]"
        if root is not None:
            fix = f"a dataset.json in {root} listing the labels (\"labels\": {{\"0\": \"background\", ...}}) or {fix}"
        first = holders[0]
        out.append(DataProblem(f"label value {v} is in only {len(holders)} of the {n} labeled cases ({where}) and "
                               f"becomes a class: a stray value? Without a dataset.json every label value is a "
                               f"class; declare the classes with {fix}",
                               None if label_paths is None else label_paths.get(first), first, "warning"))
    flagged = {s[0] for s in stray}
    for v in values:  # a structure labeled with another value in some files: 5 where the others have 2
        holders = set(holders_of[v])
        if v in flagged or n < 3 or 2 * len(holders) >= n:
            continue
        for w in values:
            has_w = set(holders_of[w])
            if w != v and has_w and not has_w & holders and has_w | holders == set(counts):
                names = ", ".join(sorted(holders)[:3]) + (f" and {len(holders) - 3} more" if len(holders) > 3 else "")
                first = sorted(holders)[0]
                out.append(DataProblem(
                    f"label value {v} is in only {len(holders)} of the {n} labeled cases ({names}), which have no "
                    f"value {w} where every other case has one: the same structure labeled {v} there? Both become "
                    f"classes; relabel those files, or declare the classes (a dataset.json, or data.label_values)",
                    None if label_paths is None else label_paths.get(first), first, "warning"))
                break
    return out


def training_orientation(ds) -> Tuple[Optional[str], Optional[str]]:
    """``(order, note)``: the voxel order (:mod:`semisupseg.orientation` code) of most of the run's scans, read from
    their headers — the model card records it and inference brings every scan into it — and, when some cases are
    stored in another order, the note saying they are brought into it as they are read (else ``None``). Ties go to
    the labeled cases' order. ``(None, None)`` without files (a header that cannot be read is left to the loading,
    which names the problem)."""
    from collections import Counter

    from semisupseg.orientation import file_orientation

    h5_spacing = ds.spec.h5_spacing_xyz if ds.spec is not None else (0.625, 0.625, 0.625)
    codes: Dict[str, str] = {}
    for case in list(ds.labeled) + list(ds.val) + list(ds.unlabeled):
        try:
            codes[case.case_id] = file_orientation(case.channel_paths[0], h5_spacing)
        except (InputError, OSError):
            continue
    if not codes:
        return None, None
    counts = Counter(codes.values())
    labeled = Counter(codes[c.case_id] for c in list(ds.labeled) + list(ds.val) if c.case_id in codes)
    order = max(counts, key=lambda k: (counts[k], labeled[k]))
    others = {k: n for k, n in counts.items() if k != order}
    if not others:
        return order, None
    moved = ", ".join(f"{k}: {n}" for k, n in sorted(others.items(), key=lambda kv: -kv[1]))
    examples = ", ".join(sorted(c for c, k in codes.items() if k != order)[:3])
    return order, (f"{sum(others.values())} of {len(codes)} scans are stored in another voxel order ({moved}; e.g. "
                   f"{examples}) than the rest ({order}): they are brought into {order} as they are read, and the "
                   "model segments every scan that way")


def load_train_data(cfg: DataConfig, progress: ProgressCallback = no_progress,
                    cancel: Optional[CancelToken] = None, with_unlabeled: bool = True) -> TrainData:
    """Discover, split, read and preprocess the cases of ``cfg`` (see :class:`DataConfig` for the rules).
    ``with_unlabeled=False`` skips reading the unlabeled pool (methods that do not use it)."""
    from semisupseg.data import PreprocessConfig, load_dataset
    from semisupseg.data.cases import DataProblem, raise_problems

    problems: List[DataProblem] = []  # every problem of the data is reported at once (as check-data lists them)
    try:
        ds, notes = resolve_cases(cfg, with_unlabeled, problems)
    except InputError as exc:
        problems.append(DataProblem.from_error(exc))
        raise_problems(problems)
        raise
    orientation, orientation_note = training_orientation(ds)
    pre = PreprocessConfig(normalization=dict(cfg.normalization),
                           spacing_xyz=None if cfg.spacing is None else tuple(cfg.spacing),
                           orientation=orientation if orientation_note else None)
    if orientation_note:
        notes = notes + [orientation_note]
    loaded = load_dataset(ds, pre, progress=progress, cancel=cancel, problems=problems)

    def conv(cases) -> List[CaseArrays]:
        return [CaseArrays(c.case_id, c.image, c.label, c.spacing_xyz) for c in cases]

    data = TrainData(labeled=conv(loaded.labeled), unlabeled=conv(loaded.unlabeled), validation=conv(loaded.val),
                     class_names=list(loaded.classes.names), label_values=list(loaded.classes.label_values),
                     normalization=pre.normalization.to_dict())
    problem = spacing_problem({c.case_id: c.spacing_xyz for c in data.labeled + data.unlabeled + data.validation},
                              cfg.spacing)
    if problem is not None:
        raise InputError(problem)
    data.spacing_xyz = data.labeled[0].spacing_xyz
    data.orientation = orientation
    if ds.classes is None:  # classes inferred from the values found: say which ones look like stray voxels
        lut = np.asarray(data.label_values)
        counts: Dict[str, Dict[int, int]] = {}
        for c in data.labeled + data.validation:
            per_class = np.bincount(np.asarray(c.label, dtype=np.int64).ravel(), minlength=len(lut))
            counts[c.case_id] = {int(lut[i]): int(k) for i, k in enumerate(per_class) if k}
        paths = {c.case_id: None if c.label_path is None else str(c.label_path) for c in ds.labeled + ds.val}
        problems += stray_label_problems(counts, {c.case_id: int(c.label.size) for c in data.labeled +
                                                  data.validation}, paths, classes_folder(cfg))
    warnings = [f"warning: {p.line}" for p in problems if p.severity != "error"]
    data.notes = notes + warnings
    if warnings:
        from semisupseg.training.distributed import env_is_main

        if env_is_main():  # the start-up output of train (one process under torchrun)
            for line in warnings:
                print(line, file=sys.stderr)
    data.sources = {c.case_id: c for c in list(ds.unused) + list(ds.labeled) + list(ds.unlabeled) + list(ds.val)}
    return data


__all__ = ["STRAY_VOXEL_FRACTION", "classes_folder", "dataset_spec", "load_train_data", "resolve_cases",
           "spacing_problem", "stray_label_problems", "training_orientation"]
