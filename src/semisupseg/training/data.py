"""Training data in memory: labeled, unlabeled and validation cases as normalised arrays.

The engine trains from a :class:`TrainData`; :func:`load_train_data` builds one from the paths of a
:class:`~semisupseg.training.config.DataConfig` with :mod:`semisupseg.io` / :mod:`semisupseg.data` (reading,
resampling, normalising). Tests and the Slicer module can build a :class:`TrainData` from arrays directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from semisupseg.errors import InputError


@dataclass
class CaseArrays:
    """One preprocessed case: ``image`` ``(C, Z, Y, X)`` float32 normalised; ``label`` ``(Z, Y, X)`` int64 class
    indices ``0..C-1`` or ``None``; ``spacing_xyz`` mm."""

    case_id: str
    image: np.ndarray
    label: Optional[np.ndarray] = None
    spacing_xyz: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim == 3:
            self.image = self.image[None]
        if self.image.ndim != 4:
            raise InputError(f"case {self.case_id}: image must be (C, Z, Y, X) or (Z, Y, X), got "
                             f"{self.image.shape}")
        if self.label is not None:
            self.label = np.asarray(self.label)
            if not np.issubdtype(self.label.dtype, np.integer):
                if not np.all(np.isfinite(self.label)) or not np.all(self.label == np.round(self.label)):
                    raise InputError(f"case {self.case_id}: label values must be whole class indices")
                self.label = self.label.astype(np.int64)
            if self.label.shape != self.image.shape[1:]:
                raise InputError(f"case {self.case_id}: label shape {self.label.shape} differs from the image's "
                                 f"{self.image.shape[1:]}")
        self.spacing_xyz = tuple(float(s) for s in self.spacing_xyz)  # type: ignore[assignment]

    @property
    def pair(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        return (self.image, self.label)


@dataclass
class TrainData:
    """Cases for one run. ``validation`` cases are labeled training cases held out for model selection.

    ``class_names`` / ``label_values``: one per class, background first (``label_values[i]`` is the file value of
    class ``i``); ``spacing_xyz``: the common grid spacing (mm) the model works at; ``normalization``: the
    intensity normalisation applied (a dict for the model card).
    """

    labeled: List[CaseArrays]
    unlabeled: List[CaseArrays] = field(default_factory=list)
    validation: List[CaseArrays] = field(default_factory=list)
    class_names: Optional[List[str]] = None
    label_values: Optional[List[int]] = None
    spacing_xyz: Optional[Tuple[float, float, float]] = None
    normalization: dict = field(default_factory=lambda: {"kind": "zscore"})
    notes: List[str] = field(default_factory=list)
    #: the voxel order of the scans as the network sees them (:mod:`semisupseg.orientation` code; the model card's
    #: ``inference["orientation"]``), ``None`` when unknown (data given as arrays)
    orientation: Optional[str] = None
    #: the files of each case by id (:class:`semisupseg.data.Case`) when the data was read from disk; training
    #: snapshots re-read a case from them to write overlays in its original geometry
    sources: Dict[str, Any] = field(default_factory=dict)

    def infer_num_classes(self) -> int:
        """Number of classes: from ``class_names``, else the largest class index in the labels + 1 (at least 2)."""
        if self.class_names is not None:
            return len(self.class_names)
        top = max(int(c.label.max()) for c in self.labeled + self.validation if c.label is not None)
        return max(2, top + 1)

    def check(self, num_classes: int, in_channels: int) -> None:
        if not self.labeled:
            raise InputError("no labeled training cases")
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise InputError(f"data.num_classes={num_classes} but the data has {len(self.class_names)} classes "
                             f"({', '.join(self.class_names)})")
        for case in self.labeled + self.validation:
            if case.label is None:
                raise InputError(f"case {case.case_id} is used as labeled but has no label")
            lo, hi = int(case.label.min()), int(case.label.max())
            if lo < 0 or hi >= num_classes:
                raise InputError(f"case {case.case_id}: label class indices {lo}..{hi} outside 0..{num_classes - 1}"
                                 " (set data.num_classes / data.label_values)")
        for case in self.labeled + self.unlabeled + self.validation:
            if case.image.shape[0] != in_channels:
                raise InputError(f"case {case.case_id} has {case.image.shape[0]} channel(s), the config says "
                                 f"in_channels={in_channels}")
        if self.spacing_xyz is None:
            self.spacing_xyz = self.labeled[0].spacing_xyz
        if self.class_names is None:
            self.class_names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
        if self.label_values is None:
            self.label_values = list(range(num_classes))

    def summary(self) -> dict:
        return {"labeled": [c.case_id for c in self.labeled], "unlabeled": [c.case_id for c in self.unlabeled],
                "validation": [c.case_id for c in self.validation], "class_names": self.class_names,
                "label_values": self.label_values, "spacing_xyz": self.spacing_xyz, "notes": self.notes}


def no_training_case(validation, n_labeled: int) -> str:
    """The error for a validation hold-out (a count, or a list of case ids) that takes every one of the
    ``n_labeled`` labeled cases, with the option that fixes it."""
    if not isinstance(validation, int):
        return (f"the validation cases {[str(v) for v in validation]} leave no labeled training case ({n_labeled} "
                "labeled): list fewer in --validation, or use --validation 0 (no validation)")
    fix = "--validation 1 (one case held out) or --validation 0 (no validation)" if n_labeled >= 2 else \
        "--validation 0 (no validation)"
    return f"data.validation={validation} would leave no labeled training case ({n_labeled} labeled): use {fix}"


def split_validation(labeled: Sequence[CaseArrays], validation) -> Tuple[List[CaseArrays], List[CaseArrays]]:
    """``(train, held_out)``: ``validation`` is a count (the **last** N labeled cases, keeping the papers' first-N
    labeled subsets intact at the front) or a list of case ids (which must be labeled cases)."""
    labeled = list(labeled)
    if isinstance(validation, int):
        n = int(validation)
        if n == 0:
            return labeled, []
        if n >= len(labeled):
            raise InputError(no_training_case(n, len(labeled)))
        return labeled[:-n], labeled[-n:]
    wanted = [str(v) for v in validation]
    ids = {c.case_id for c in labeled}
    missing = [v for v in wanted if v not in ids]
    if missing:
        raise InputError(f"validation case(s) {missing} are not among the labeled cases")
    held = [c for c in labeled if c.case_id in wanted]
    train = [c for c in labeled if c.case_id not in wanted]
    if not train:
        raise InputError(no_training_case(wanted, len(labeled)))
    return train, held


__all__ = ["CaseArrays", "TrainData", "no_training_case", "split_validation"]
