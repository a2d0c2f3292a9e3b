"""Read the training cases a :class:`~semisupseg.training.config.DataConfig` names into a :class:`TrainData`.

Discovery, splits, reading, resampling and normalisation are :mod:`semisupseg.data`'s (``build_dataset``,
``load_dataset``); this module only adds the engine's rule for the validation hold-out (see ``DataConfig``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple


from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback, no_progress
from semisupseg.training.config import DataConfig
from semisupseg.training.data import CaseArrays, TrainData


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


def _hold_out(ds, cfg: DataConfig, spec, collect: bool = False) -> List[str]:
    """Move validation cases into ``ds.val`` following ``cfg.validation``; returns notes for ``data.json``."""
    from semisupseg.data import discover_cases

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
                raise InputError(f"data.validation={want} would leave no labeled training case "
                                 f"({len(ds.labeled)} labeled)")
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
    ds.val = [full[i] for i in ids]
    ds.labeled = [c for c in ds.labeled if c.case_id not in idset]
    ds.unlabeled = [c for c in ds.unlabeled if c.case_id not in idset]
    if not ds.labeled:
        raise InputError("the validation cases leave no labeled training case")
    return notes


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
    ds = build_dataset(spec, problems=problems)
    notes = list(ds.notes) + _hold_out(ds, cfg, spec, collect=True)
    if cfg.max_unlabeled is not None:
        ds.unused += ds.unlabeled[int(cfg.max_unlabeled):]
        ds.unlabeled = ds.unlabeled[: int(cfg.max_unlabeled)]
    if not with_unlabeled:
        notes.append(f"unlabeled pool of {len(ds.unlabeled)} cases not read: the method uses labeled data only")
        ds.unused += ds.unlabeled
        ds.unlabeled = []
    return ds, notes


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
    pre = PreprocessConfig(normalization=dict(cfg.normalization),
                           spacing_xyz=None if cfg.spacing is None else tuple(cfg.spacing))
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
    data.notes = notes
    data.sources = {c.case_id: c for c in list(ds.unused) + list(ds.labeled) + list(ds.unlabeled) + list(ds.val)}
    return data


__all__ = ["dataset_spec", "load_train_data", "resolve_cases", "spacing_problem"]
