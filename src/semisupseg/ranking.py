"""Rank unlabeled scans by how unsure a model is of them: which scan to label next (active learning, no server).

Each scan is segmented with :func:`semisupseg.inference.segment` (what ``semisupseg segment`` does) and scored on
the region the annotator would have to check: the predicted object (every foreground class) together with its
outer boundary band ``R = F ∪ outer band`` — the band of the boundary-aware loss
(:func:`semisupseg.geometry.boundary_ring`, eq. 8 with one training patch as ``A_whole``, in the scan's voxels).
Restricting to ``R`` keeps the score independent of the field of view: confident background far from the
object, which fills most of a scan, would otherwise dilute every score towards zero, more so for larger scans.

Measures (:data:`MEASURES`):

* ``boundary_entropy`` (default) — mean voxel entropy of the class probabilities over ``R``, normalised to [0, 1]
  (logarithm base = number of classes). One prediction per scan, the same one the user will correct; uncertainty
  concentrates on the object's boundary, which is where corrections are made.
* ``region_fraction`` — the share of ``R`` that SGRS-Net's partition (:func:`semisupseg.methods.sgrs.partition`:
  the scan and its MixUp view, entropy threshold τ) leaves outside Ω, i.e. Δ ∪ Θ: voxels where either view is
  uncertain or the two views confidently disagree. (The Ω ∪ Θ fraction — the confident share, 1 − Δ — measures
  certainty; its complement Δ alone would miss the confident disagreements Θ.) It needs two more predictions
  (the two views on the model's grid), so it costs about three times the default.
* ``member_disagreement`` — for an ensemble model file (``semisupseg ensemble``) only: the mean over ``R`` of the
  voxels' mutual information between class and member (:func:`semisupseg.geometry.mutual_information`, BALD),
  normalised like the entropy: the share of the uncertainty that comes from the members disagreeing (what more
  labels would settle) rather than from each member being unsure (what the image leaves ambiguous). One more
  prediction per member, so about twice the default.

Why ``boundary_entropy`` is the default: it ranks scans by their true error as well as ``region_fraction`` at a
third of the cost, with no choice of a partner view. Measured on the 40 held-out hippocampus scans of
``benchmarks/splits/hippocampus.json`` (labels held back; supervised V-Nets, 32³ patches, CPU), Spearman correlation
of the score with 1 − Dice:

===========================================  ===========  ================  ===============  ======================
model (test Dice mean ± sd)                  boundary_     region_fraction  whole-scan mean  top-10 ranked / rest:
                                             entropy                        entropy          mean Dice
===========================================  ===========  ================  ===============  ======================
5 labeled, 300 it (0.755 ± 0.080)            0.653        0.650             0.43             0.675 / 0.782
20 labeled, 600 it (0.846 ± 0.043)           0.642        0.635             0.52             0.808 / 0.858
===========================================  ===========  ================  ===============  ======================

The whole-scan mean entropy (no object/band restriction) ranks clearly worse, which is why the measures are taken
on the object and its band. With the shipped 5-member ``hippocampus`` ensemble (20 labeled + 120 unlabeled, test
Dice 0.878 ± 0.028; 2026-12-04) the Spearman correlations are 0.398 (``boundary_entropy``), 0.375
(``region_fraction``) and 0.295 (``member_disagreement``); the ten scans each ranks first have mean Dice 0.857,
0.862 and 0.869 against 0.885, 0.884 and 0.881 for the rest. The members' disagreement alone finds the worst scans
less well than the entropy of their averaged prediction here: where this ensemble errs, its members tend to err
alike (the error the 20 labels leave), so ``boundary_entropy`` stays the default for ensembles too. Reproduce:
``semisupseg rank --model best.pt <the 40 test images> -o ranking.csv --measure all --labels
Task04_Hippocampus/labelsTr``. Scans where the model predicts no object at all are listed
first (``empty``): either the model fails on them or they lack the structure — a person should look.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback, no_progress, scaled
from semisupseg.volume import Volume

MEASURES = ("boundary_entropy", "region_fraction", "member_disagreement")
DEFAULT_MEASURE = "boundary_entropy"

PathLike = Union[str, Path]


@dataclass
class CaseScore:
    """One scan's scores. ``scores``: measure -> value (higher = less sure); ``object_voxels`` / ``band_voxels``:
    sizes of the predicted object and of its band (``R`` is their union); ``empty``: no object predicted (the
    scores are then taken over the whole scan); ``dice``: mean foreground Dice against a held-back label, when
    one was given; ``rank``: 1 = label first."""

    case_id: str
    image: str
    scores: Dict[str, float]
    object_voxels: int
    band_voxels: int
    empty: bool
    seconds: float
    dice: Optional[float] = None
    rank: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


def _model_seg_form(model, card) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "seg_form", None) or (card.network or {}).get("seg_form") or "softmax")


def object_band(labels: np.ndarray, background: int, patch_voxels: Optional[int] = None) -> tuple:
    """``(object, band)`` bool masks: the predicted foreground (any class) and its outer boundary band
    (:func:`semisupseg.geometry.boundary_ring`, ``whole_voxels = patch_voxels``)."""
    from semisupseg.geometry import boundary_ring

    obj = np.asarray(labels) != background
    if not obj.any():
        return obj, np.zeros_like(obj)
    return obj, np.asarray(boundary_ring(obj, whole_voxels=patch_voxels).outer, dtype=bool)


def score_volume(volume: Union[Volume, Sequence[Volume]], model, card, measures: Sequence[str] = (DEFAULT_MEASURE,),
                 device: str = "auto", fast: bool = True, progress: ProgressCallback = no_progress,
                 cancel: Optional[CancelToken] = None) -> Dict[str, Any]:
    """Scores of one scan. Returns ``{"scores": {measure: value}, "labels": label Volume, "object_voxels",
    "band_voxels", "empty"}``."""
    from semisupseg.inference import SegmentOptions, segment

    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise InputError(f"unknown uncertainty measure(s) {unknown}; known: {', '.join(MEASURES)}")
    n = int(card.num_classes)
    result = segment(volume, model, card, SegmentOptions(device=device, fast=fast, compute_sdm=False,
                                                         compute_entropy=True, entropy_base=float(n)),
                     progress=scaled(progress, 0.0, 0.6 if "region_fraction" in measures else 1.0), cancel=cancel)
    labels = result.labels
    spacing_in = np.prod(labels.spacing)
    patch_voxels = int(round(np.prod(card.patch_size_zyx) * np.prod(card.spacing_xyz) / spacing_in))
    obj, band = object_band(labels.array, int(card.label_values[0]), patch_voxels)
    region = obj | band
    empty = not obj.any()
    if empty:
        region = np.ones_like(obj)
    scores: Dict[str, float] = {}
    if "boundary_entropy" in measures:
        scores["boundary_entropy"] = float(np.mean(result.entropy.array[region]))
    if "member_disagreement" in measures:
        scores["member_disagreement"] = _member_disagreement(volume, model, card, region, device, fast, cancel)
    if "region_fraction" in measures:
        from semisupseg.data.preprocess import NormalizationConfig, PreprocessConfig, preprocess_image, resample_like
        from semisupseg.geometry import REGION_AGREE
        from semisupseg.methods.sgrs import partition

        image = volume if isinstance(volume, Volume) else volume[0]
        vols = [volume] if isinstance(volume, Volume) else list(volume)
        if len(vols) > 1:
            image = image.with_array(np.stack([np.asarray(v.array, np.float32) for v in vols]))
        from semisupseg.inference.segment import scan_reorientation

        turn = scan_reorientation(image, card)  # the network sees the scan as segment() shows it to it
        if turn is not None:
            image = turn.volume(image)
        pre = PreprocessConfig(normalization=NormalizationConfig.from_dict(card.normalization),
                               spacing_xyz=tuple(card.spacing_xyz))
        on_grid = preprocess_image(image.with_array(np.asarray(image.array, np.float32)), pre)
        if cancel is not None:
            cancel.raise_if_cancelled("ranking")
        progress(0.6, "regions")
        import torch

        dev = device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        codes, _ = partition(model, on_grid.array, card.patch_size_zyx, dev, _model_seg_form(model, card), n)
        back = resample_like(on_grid.with_array(codes), labels if turn is None else turn.volume(labels),
                             is_label=True).array
        if turn is not None:
            back = turn.undo(back)
        scores["region_fraction"] = float(np.mean(back[region] != REGION_AGREE))
        progress(1.0, "done")
    return {"scores": scores, "labels": labels, "object_voxels": int(obj.sum()), "band_voxels": int(band.sum()),
            "empty": empty}


def _members(model) -> list:
    """An ensemble network's members (``[]`` for one network)."""
    return list(getattr(model, "members", None) or [])


def model_measures(model) -> List[str]:
    """The measures of :data:`MEASURES` this model has: ``member_disagreement`` needs an ensemble."""
    return [m for m in MEASURES if m != "member_disagreement" or len(_members(model)) >= 2]


def _member_disagreement(volume, model, card, region: np.ndarray, device: str, fast: bool,
                         cancel: Optional[CancelToken]) -> float:
    """Mean normalised mutual information between class and member over ``region`` (each member segments the scan
    as :func:`semisupseg.inference.segment` does; their probabilities on the input grid)."""
    from semisupseg.geometry import mutual_information
    from semisupseg.inference import SegmentOptions, segment

    members = _members(model)
    if len(members) < 2:
        raise InputError(f"member_disagreement needs an ensemble model file (semisupseg ensemble A.pt B.pt ...); "
                         f"this model is one {card.arch!r} network")
    options = SegmentOptions(device=device, fast=fast, compute_sdm=False, compute_entropy=False, keep_largest=False)
    probs = []
    for member in members:
        if cancel is not None:
            cancel.raise_if_cancelled("ranking")
        probs.append(segment(volume, member, card, options).probabilities.array)
    return float(np.mean(mutual_information(probs, axis=0, base=float(card.num_classes))[region]))


def mean_dice(pred: np.ndarray, ref: np.ndarray, label_values: Sequence[int]) -> float:
    """Mean Dice over the foreground classes (``label_values[1:]``) of two label maps with file values."""
    from semisupseg.metrics import dice

    return float(np.mean([dice(pred == v, ref == v) for v in label_values[1:]]))


def labels_note(case_ids: Sequence[str], labels: Dict[str, PathLike], folder: PathLike) -> Optional[str]:
    """A one-line note when the held-back labels of ``folder`` (case id -> file) miss ranked scans: none matching
    (no Dice column, no Spearman correlation) or only some (how many). ``None`` when every scan has its label."""
    ids = list(case_ids)
    matched = sum(1 for c in ids if c in labels)
    if matched == len(ids):
        return None
    if matched == 0:
        found = f"e.g. label {sorted(labels)[0]!r}" if labels else "no label files"
        example = f" (scan {ids[0]!r}, {found})" if ids else ""
        return (f"--labels {folder}: no label file matches a ranked scan's name{example}; no Dice column and no "
                "Spearman correlation")
    return (f"--labels {folder}: label files match {matched} of the {len(ids)} ranked scans; Dice only for those"
            + ("" if matched >= 3 else " (the Spearman correlation needs 3)"))


def rank_cases(cases: Sequence[Any], model, card, measure: str = DEFAULT_MEASURE, also: Sequence[str] = (),
               labels: Optional[Dict[str, PathLike]] = None, device: str = "auto", fast: bool = True,
               progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
               on_case: Optional[Callable[[CaseScore], None]] = None,
               on_error: Optional[Callable[[Any, BaseException], None]] = None) -> List[CaseScore]:
    """Score every case (:class:`semisupseg.data.Case`, images only are read) and sort: scans with no predicted
    object first, then by ``measure``, highest (least sure) first. ``also``: more measures to compute (columns).
    ``labels``: case id -> label file held back, to report each scan's true Dice next to its score.

    ``on_error(case, exc)``: when given, a case that cannot be read or scored (an unreadable or truncated file, a
    failed segmentation: the errors ``semisupseg segment`` goes on past) is handed to it and left out of the
    ranking, and the others are still ranked; ``on_error`` may re-raise to stop. Without it the error propagates.
    Cancelling always stops."""
    from semisupseg.data.cases import read_case
    from semisupseg.errors import CASE_ERRORS, Cancelled
    from semisupseg.io import read_label

    if measure not in MEASURES:
        raise InputError(f"unknown uncertainty measure {measure!r}; known: {', '.join(MEASURES)}")
    measures = [measure] + [m for m in also if m != measure]
    rows: List[CaseScore] = []
    for i, case in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled("ranking")
        t0 = time.perf_counter()
        try:
            image, _ = read_case(case, with_label=False, what="rank")
            out = score_volume(image, model, card, measures, device=device, fast=fast,
                               progress=scaled(progress, i / len(cases), (i + 1) / len(cases)), cancel=cancel)
            row = CaseScore(case.case_id, str(case.channel_paths[0]), out["scores"], out["object_voxels"],
                            out["band_voxels"], out["empty"], time.perf_counter() - t0)
            if labels is not None and case.case_id in labels:
                ref = read_label(labels[case.case_id], out["labels"])
                row.dice = mean_dice(out["labels"].array, ref.array, card.label_values)
        except Cancelled:
            raise
        except CASE_ERRORS as exc:
            if on_error is None:
                raise
            on_error(case, exc)
            continue
        rows.append(row)
        if on_case is not None:
            on_case(row)
    return order(rows, measure)


def order(rows: List[CaseScore], measure: str = DEFAULT_MEASURE) -> List[CaseScore]:
    """Sort ``rows`` in place into labelling order and number them (``rank`` 1 first): scans with nothing
    predicted first, then the highest ``measure`` (least sure), ties by case id."""
    rows.sort(key=lambda r: (not r.empty, -r.scores[measure], r.case_id))
    for k, r in enumerate(rows, 1):
        r.rank = k
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant input."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def ranking_csv(rows: Sequence[CaseScore], measure: str) -> str:
    """The ranking as CSV text: ``rank, case, score`` (the ranking measure), every computed measure, ``empty``,
    ``object_voxels``, ``band_voxels``, ``dice`` (when labels were given), ``image``."""
    measures = [measure] + sorted({m for r in rows for m in r.scores} - {measure})
    with_dice = any(r.dice is not None for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "case", "score"] + measures + ["empty", "object_voxels", "band_voxels"]
               + (["dice"] if with_dice else []) + ["image"])
    for r in rows:
        w.writerow([r.rank, r.case_id, f"{r.scores[measure]:.6f}"] + [f"{r.scores[m]:.6f}" for m in measures]
                   + [int(r.empty), r.object_voxels, r.band_voxels]
                   + ([("" if r.dice is None else f"{r.dice:.6f}")] if with_dice else []) + [r.image])
    return buf.getvalue()


def read_ranking_csv(path: PathLike) -> List[Dict[str, str]]:
    """The rows of a ranking CSV as dicts (for the Slicer panel's table)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


__all__ = ["CaseScore", "DEFAULT_MEASURE", "MEASURES", "labels_note", "mean_dice", "model_measures", "object_band",
           "order", "rank_cases", "ranking_csv", "read_ranking_csv", "score_volume", "spearman"]
