"""Segment a whole image with a trained model: what the CLI ``segment`` command and the Slicer *Segment* button call.

Pipeline (:func:`segment`): bring the scan into the voxel order of the model's training scans (exact axis
permutations and flips, :mod:`semisupseg.orientation`; when the card records it) → normalise the intensities as the
model card says and resample (linear) to the model's voxel spacing
(:func:`semisupseg.data.preprocess.preprocess_image`, the same function training uses) →
sliding-window inference → resample the class probabilities (and SDM) back to the input grid (linear,
:func:`~semisupseg.data.preprocess.resample_like`) → argmax → label values of the card → optional
largest-component filtering → the input's own voxel order again. Every output is a
:class:`~semisupseg.volume.Volume` with exactly the input's geometry (shape, spacing, origin, direction).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from torch import nn

from semisupseg.errors import InputError, OutOfMemoryError, is_out_of_memory, out_of_memory_detail
from semisupseg.inference.postprocess import SDM_FROM_HEAD, SDM_FROM_LABELS, keep_largest_component, segmentation_sdm
from semisupseg.inference.sliding_window import (BLENDS, FAST_MIN_DICE, LAYOUTS, Box, normalise_roi,
                                                 sliding_window_inference)
from semisupseg.progress import CancelToken, ProgressCallback, scaled
from semisupseg.volume import Volume


@dataclass
class SegmentOptions:
    """How :func:`segment` runs (defaults: the fast, default layout).

    * ``layout``: ``"default"`` (``overlap``, ``blend``), ``"papers"`` (the releases' strides 18/18/4 and
      uniform averaging; overrides ``overlap`` and ``blend``) or ``"whole"`` (the padded image as one window).
    * ``overlap``: fraction of the window shared with its neighbour (0.5); ``blend``: ``"gaussian"`` or
      ``"constant"``; ``sigma_scale``: Gaussian sigma as a fraction of the window side (1/8).
    * ``batch_size``: windows per forward pass; ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``...
    * ``fast``: channels_last_3d + bf16 autocast when it keeps the labels (``fast_min_dice`` against fp32 on a
      probe window, see :func:`~semisupseg.inference.sliding_window_inference`); ``False`` = plain fp32.
    * ``tta_axes``: spatial axes flipped for test-time augmentation, **z, y, x** numbering (0, 1, 2) of the
      model's grid; ``()`` none.
    * ``roi``: ``((z0, z1), (y0, y1), (x0, x1))`` voxel bounds in the **input** image (stop exclusive); only that
      box is segmented, the rest is background.
    * ``keep_largest``: keep the largest connected component of each class (the releases' post-processing);
      ``None``: what the model card recommends (``card.inference["keep_largest"]``, else off).
    * ``compute_sdm`` / ``compute_entropy``: also return the SDM / voxel entropy. The SDM is the network's SDM head
      when it has one, else the signed distance map of the predicted segmentation (same normalisation, seed paper
      eq. 1: [-1, 1], negative inside; ``SegmentationResult.sdm_source`` says which);
      ``entropy_base``: logarithm base of the entropy (``e``: nats; ``2``: bits, in [0, 1] for two classes).
    """

    layout: str = "default"
    overlap: float = 0.5
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    batch_size: int = 1
    device: str = "auto"
    fast: bool = True
    fast_min_dice: float = FAST_MIN_DICE
    tta_axes: Tuple[int, ...] = ()
    roi: Optional[Box] = None
    keep_largest: Optional[bool] = None
    compute_sdm: bool = True
    compute_entropy: bool = True
    entropy_base: float = math.e

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.blend not in BLENDS:
            raise InputError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        self.tta_axes = tuple(int(a) for a in self.tta_axes)
        if any(a not in (0, 1, 2) for a in self.tta_axes):
            raise InputError(f"TTA flip axes are 0 (z), 1 (y), 2 (x); got {self.tta_axes}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolved_keep_largest(options: SegmentOptions, card) -> bool:
    """``options.keep_largest``, or when it is ``None`` the model card's recommendation (off by default)."""
    if options.keep_largest is not None:
        return bool(options.keep_largest)
    return bool((getattr(card, "inference", None) or {}).get("keep_largest", False))


def trained_flip_axes(card) -> Tuple[int, ...]:
    """The spatial axes (**z, y, x** numbering of the model's grid) whose flips the model was trained on, from the
    card's ``training["augmentation"]`` (:func:`semisupseg.data.augment.tta_axes_for`). Cards that do not record it
    (imported release weights, models of earlier versions) were trained with the papers' rotation + flip: y and x."""
    from semisupseg.data.augment import tta_axes_for

    policy = (card.training or {}).get("augmentation", "papers")
    try:
        return tta_axes_for(policy)
    except ValueError:
        return tta_axes_for("papers")


def tta_axes_for_model(card, requested: Optional[Sequence[int]] = None) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Flip-TTA axes to use for a model: ``(axes, dropped)``.

    ``requested`` ``None`` takes every flip the model was trained on (:func:`trained_flip_axes`); otherwise the
    requested axes are kept where the model was trained on them and the others are returned in ``dropped``: a flip
    the network never saw in training averages in predictions from outside its training distribution (a model
    trained with ``augment="none"`` on lateralised anatomy labels a mirrored scan wrongly), so it is not used.
    """
    trained = trained_flip_axes(card)
    if requested is None:
        return trained, ()
    wanted = tuple(sorted(set(int(a) for a in requested)))
    return tuple(a for a in wanted if a in trained), tuple(a for a in wanted if a not in trained)


@dataclass
class SegmentationResult:
    """Outputs of :func:`segment`, all in the input image's geometry.

    * ``labels``: ``(Z, Y, X)`` label map with the card's ``label_values`` (uint8 when they fit);
    * ``probabilities``: ``(C, Z, Y, X)`` float32 class probabilities (class order of the card, background first);
    * ``sdm``: ``(C-1, Z, Y, X)`` float32 signed distance map in [-1, 1] (negative inside), or ``None``;
    * ``entropy``: ``(Z, Y, X)`` float32 voxel entropy of the probabilities (base ``SegmentOptions.entropy_base``),
      or ``None``;
    * ``info``: windows, precision used, timings, ``sdm_source``;
    * ``sdm_source`` (read from ``info``): ``"SDM head"`` (the network's prediction) or ``"predicted segmentation"``
      (the distance map of ``labels``, for a network without the head), ``None`` without an SDM.
    """

    labels: Volume
    probabilities: Volume
    sdm: Optional[Volume] = None
    entropy: Optional[Volume] = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sdm_source(self) -> Optional[str]:
        return self.info.get("sdm_source")


def _label_dtype(values: Sequence[int]) -> np.dtype:
    lo, hi = min(values), max(values)
    for dt in (np.uint8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _as_channels(volume: Union[Volume, Sequence[Volume]], in_channels: int) -> Volume:
    """One ``(C, Z, Y, X)`` float32 Volume from a Volume (3D, or 4D with channels) or a list of 3D Volumes."""
    if isinstance(volume, Volume):
        vols = [volume]
    else:
        vols = list(volume)
        if not vols or not all(isinstance(v, Volume) for v in vols):
            raise InputError("segment() needs a Volume or a list of Volumes (one per input channel)")
    ref = vols[0]
    arrays = []
    for v in vols:
        if not v.same_geometry(ref):
            raise InputError(f"input channels must share one geometry; {v.path or 'a channel'} differs from "
                             f"{ref.path or 'the first'}", v.path)
        if np.issubdtype(v.array.dtype, np.floating) and v.array.dtype.itemsize > 4 and v.array.size and \
                np.all(np.isfinite(v.array)) and float(np.max(np.abs(v.array))) > float(np.finfo(np.float32).max):
            raise InputError("image values exceed the float32 range (|value| > 3.4e38): rescale it first", v.path)
        a = np.asarray(v.array, dtype=np.float32)
        arrays.extend([a] if a.ndim == 3 else list(a))
    if len(arrays) != in_channels:
        raise InputError(f"the model expects {in_channels} input channel(s), got {len(arrays)}", ref.path)
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise InputError("image contains NaN or infinite values", ref.path)
    return Volume(np.stack(arrays), ref.spacing, ref.origin, ref.direction.copy(), ref.path)


def _roi_on_grid(roi: Box, shape_in: Sequence[int], shape_out: Sequence[int]) -> Box:
    """Voxel box of the input grid mapped to a grid of the same extent with ``shape_out`` voxels (covering)."""
    out = []
    for (a, b), n, m in zip(roi, shape_in, shape_out):
        out.append((int(math.floor(a * m / n)), int(math.ceil(b * m / n))))
    return tuple(out)  # type: ignore[return-value]


def segment(
    volume: Union[Volume, Sequence[Volume]],
    model: Union[nn.Module, str, Path],
    card: Optional[Any] = None,
    options: Optional[SegmentOptions] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> SegmentationResult:
    """Segment ``volume`` with ``model`` (see the module docstring for the pipeline).

    Args:
        volume: the image (a :class:`Volume`), or one Volume per channel when ``card.in_channels > 1``.
        model: the network, or the path of a model file (then ``card`` defaults to the file's card).
        card: the :class:`~semisupseg.checkpoint.ModelCard` (spacing, window size, normalisation, classes).
        options: :class:`SegmentOptions`.
        progress: ``callback(fraction, message)``; cancel: a :class:`CancelToken` polled between window batches.
    """
    options = options or SegmentOptions()
    try:
        return _segment(volume, model, card, options, progress, cancel)
    except BaseException as exc:
        if not is_out_of_memory(exc) or isinstance(exc, OutOfMemoryError):
            raise
        raise out_of_memory_error(exc, volume, card, options) from exc


def out_of_memory_error(exc: BaseException, volume: Union[Volume, Sequence[Volume]], card: Optional[Any],
                        options: SegmentOptions) -> OutOfMemoryError:
    """The one-line :class:`OutOfMemoryError` for a failed allocation while segmenting ``volume``: the image and
    window sizes and the options that lower the memory needed."""
    first = volume if isinstance(volume, Volume) else (list(volume) or [None])[0]
    path = getattr(first, "path", None)
    shape = getattr(first, "shape_zyx", None)
    size = " x ".join(str(v) for v in reversed(shape)) + " voxels (x y z)" if shape else "the image"
    window = getattr(card, "patch_size_xyz", None)
    window_text = f", window {'x'.join(str(int(v)) for v in window)}" if window else ""
    layout = ("--layout default instead of whole (one window of the whole scan), "
              if options.layout == "whole" else "")
    detail = out_of_memory_detail(exc)
    message = (f"out of memory segmenting {size}{window_text}, {options.batch_size} window(s) per pass ({detail}): "
               f"use {layout}a smaller --batch-size (windows per pass), no --tta, or segment a part with --roi")
    return OutOfMemoryError(f"{path}: {message}" if path else message)


def _segment(volume, model, card, options: SegmentOptions, progress, cancel) -> SegmentationResult:
    t0 = time.perf_counter()
    progress = progress or (lambda f, m="": None)
    if isinstance(model, (str, Path)):
        from semisupseg.checkpoint import load_model

        model, file_card = load_model(model, device="cpu")
        card = card or file_card
    if card is None:
        raise InputError("segment() needs the model card (spacing, window size, normalisation, classes)")
    from semisupseg.data.preprocess import NormalizationConfig, PreprocessConfig, preprocess_image, resample_like
    from semisupseg.geometry import entropy as voxel_entropy

    image = _as_channels(volume, int(card.in_channels))
    # checked before the preprocessing, named in the user's x y z order
    roi_in = None if options.roi is None else normalise_roi(options.roi, image.shape_zyx, "--roi", image.path)
    output_grid = Volume(np.zeros(image.shape_zyx, dtype=np.uint8), image.spacing, image.origin,
                         image.direction.copy(), image.path)
    turn = scan_reorientation(image, card)  # the network sees the scan in its training scans' voxel order
    if turn is not None:
        image = turn.volume(image)
        roi_in = None if roi_in is None else turn.box(roi_in, output_grid.shape_zyx)
    reference = Volume(np.zeros(image.shape_zyx, dtype=np.uint8), image.spacing, image.origin,
                       image.direction.copy(), image.path)
    problem = model_grid_memory_problem(image, card)
    if problem:  # before the resampling allocates it (it was an out-of-memory error blaming the window batch)
        raise OutOfMemoryError(f"{image.path}: {problem}" if image.path else problem)
    progress(0.0, "preprocessing")
    # the same preprocessing as training: normalise on the scan's own grid, then resample linearly
    prep = PreprocessConfig(normalization=NormalizationConfig.from_dict(card.normalization),
                            spacing_xyz=tuple(card.spacing_xyz))
    on_grid = preprocess_image(image, prep)
    roi_grid = None
    if roi_in is not None:
        roi_grid = _roi_on_grid(roi_in, image.shape_zyx, on_grid.shape_zyx)
    progress(0.05, "sliding windows")

    out = sliding_window_inference(
        model, on_grid.array, card.patch_size_zyx, overlap=options.overlap, blend=options.blend,
        batch_size=options.batch_size, device=options.device, fast=options.fast, layout=options.layout,
        tta_axes=options.tta_axes, roi=roi_grid, sigma_scale=options.sigma_scale,
        fast_min_dice=options.fast_min_dice, progress=scaled(progress, 0.05, 0.9), cancel=cancel,
    )
    prob = out["prob"]
    n_classes = int(card.num_classes)
    if prob.shape[0] != n_classes:
        raise InputError(f"the model outputs {prob.shape[0]} classes but its card lists {n_classes} "
                         f"({card.class_names})")
    if cancel is not None:
        cancel.raise_if_cancelled("segmentation")
    progress(0.9, "resampling to the input grid")

    prob_vol = resample_like(on_grid.with_array(prob), reference)
    p = np.clip(prob_vol.array.astype(np.float32, copy=False), 0.0, 1.0)
    p /= np.maximum(p.sum(axis=0, keepdims=True), 1e-12)
    sdm_vol = None
    if options.compute_sdm and "sdm" in out:
        sdm_vol = resample_like(on_grid.with_array(out["sdm"]), reference)
        sdm_vol = reference.with_array(np.clip(sdm_vol.array.astype(np.float32), -1.0, 1.0))
    if roi_in is not None:
        # outside the box: background (resampling may have blurred the box edge)
        inside = np.zeros(image.shape_zyx, dtype=bool)
        inside[tuple(slice(a, b) for a, b in roi_in)] = True
        p[:, ~inside] = 0.0
        p[0, ~inside] = 1.0
        if sdm_vol is not None:
            sdm_vol.array[:, ~inside] = 1.0

    values = [int(v) for v in card.label_values]
    index = np.argmax(p, axis=0)
    labels = np.asarray(values, dtype=_label_dtype(values))[index]
    keep_largest = resolved_keep_largest(options, card)
    if keep_largest:
        progress(0.95, "keeping the largest component per class")
        labels = keep_largest_component(labels, classes=values[1:], background=values[0])
    sdm_source = None if sdm_vol is None else SDM_FROM_HEAD
    if options.compute_sdm and sdm_vol is None:
        progress(0.96, "signed distance map of the segmentation")
        sdm_vol = reference.with_array(segmentation_sdm(labels, values, reference.spacing_zyx))
        sdm_source = SDM_FROM_LABELS
    ent = None
    if options.compute_entropy:
        ent = reference.with_array(np.asarray(voxel_entropy(p, axis=0, base=options.entropy_base), np.float32))
    info = dict(out["info"])
    info.update({"model_grid_zyx": list(on_grid.shape_zyx), "model_spacing_xyz": list(card.spacing_xyz),
                 "keep_largest": keep_largest, "sdm_source": sdm_source, "total_seconds": time.perf_counter() - t0})
    if turn is not None:
        info["reoriented"] = {"scan": turn.source_code, "model": turn.target_code}

    def back(array: np.ndarray) -> Volume:  # the input's own voxel order and geometry
        return output_grid.with_array(np.ascontiguousarray(turn.undo(array)) if turn is not None else array)

    progress(1.0, "done")
    return SegmentationResult(
        labels=back(labels),
        probabilities=back(p),
        sdm=None if sdm_vol is None else back(sdm_vol.array),
        entropy=None if ent is None else back(ent.array),
        info=info,
    )


#: float32 maps the model grid holds at once while segmenting, besides the class maps: the resampled scan, its
#: padded copy and the window weights (the class maps: probabilities, their sum, the SDM)
_GRID_MAPS = 3


def model_grid_memory_problem(image: Volume, card: Any, available: Optional[int] = None) -> Optional[str]:
    """Why ``image`` cannot be segmented in this process's memory once resampled to the model's voxel size (e.g. a
    100 mm "voxel" of a wrong header, or a large coarse scan for a fine model), ``None`` when it fits or the memory is
    unknown. ``available``: bytes that may be allocated (default :func:`semisupseg.io.available_memory`)."""
    from semisupseg.io import _fmt_bytes, available_memory

    grid = [max(1, int(round(n * s / t))) for n, s, t in zip(image.size_xyz, image.spacing, card.spacing_xyz)]
    channels = _GRID_MAPS + 2 * int(card.num_classes) + max(int(card.num_classes) - 1, 0)
    needed = int(np.prod(grid, dtype=np.float64)) * 4 * channels
    limit = available_memory() if available is None else available
    if limit is None or needed <= limit:
        return None
    return (f"resampled to the model's voxel size ({' x '.join(f'{v:g}' for v in card.spacing_xyz)} mm), the scan "
            f"({' x '.join(map(str, image.size_xyz))} voxels of {' x '.join(f'{v:g}' for v in image.spacing)} mm) "
            f"becomes {' x '.join(map(str, grid))} voxels: segmenting it needs about {_fmt_bytes(needed)} of memory, "
            f"more than the {_fmt_bytes(limit)} available. Check the voxel size in its header, or crop the scan to "
            "the region to segment first")


def scan_reorientation(image: Volume, card: Any):
    """The :class:`~semisupseg.orientation.Reorientation` bringing ``image`` into the voxel order of the model's
    training scans (``card.inference["orientation"]``); ``None`` when the card does not know it or the scan is
    stored that way already."""
    from semisupseg.orientation import reorientation_to

    return reorientation_to(image.direction, (getattr(card, "inference", None) or {}).get("orientation"))
