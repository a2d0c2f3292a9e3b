"""Preprocessing: intensity normalisation, resampling to a target spacing, padding to the patch size.

Arrays are **z, y, x** (optionally with a leading channel axis ``C``); spacings are **x, y, z** mm as in
:class:`~semisupseg.volume.Volume`.

Normalisation (:class:`NormalizationConfig`, :func:`normalize`):

* ``"zscore"`` (default) — per volume ``(x - mean) / std`` over all voxels, what the LA ``mri_norm2.h5`` release
  (UA-MT, SASSNet, DTC...) applied to every scan. Optional ``clip`` (fixed intensity window, e.g. CT HU
  ``(-200, 300)``) or ``percentiles`` (e.g. ``(0.5, 99.5)``, per volume) are applied **before** the statistics.
  ``nonzero=True`` computes mean/std over non-zero voxels only (skull-stripped MRI) and leaves zeros at 0.
* ``"fixed"`` — ``(x - mean) / std`` with dataset-level ``mean``/``std`` (nnU-Net's CT scheme, after ``clip``).
* ``"none"`` — cast to float32 only (data already normalised, e.g. the LA h5 release).

Order (:func:`preprocess_image`, used by training and inference alike): normalise on the image's own grid, then
resample. Resampling keeps the physical **extent** of the volume (corner-aligned grids): the first voxel centre
moves by half the spacing change, exactly as the 2x block-average of ``../shared/data/LA`` (origin 0 → 0.3125 mm at 1.25 mm).
Images are resampled linearly, labels by nearest neighbour or — ``label_mode="linear_argmax"`` — by linear
interpolation of each class's one-hot channel followed by argmax (smoother boundaries when down-sampling).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from semisupseg.errors import InputError
from semisupseg.volume import Volume

__all__ = [
    "NormalizationConfig",
    "PreprocessConfig",
    "normalize",
    "preprocess_image",
    "zscore",
    "target_shape_zyx",
    "resample_volume",
    "resample_like",
    "resample_to_shape",
    "pad_to_size",
    "unpad",
    "Pad",
]

#: per spatial axis (z, y, x): voxels added (before, after)
Pad = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]

_KINDS = ("zscore", "fixed", "none")


@dataclass
class NormalizationConfig:
    """How image intensities are normalised (stored in the model card so inference repeats it exactly).

    ``kind``: ``"zscore"`` (per volume, default, the LA release), ``"fixed"`` (dataset ``mean``/``std``) or
    ``"none"``. ``clip``: ``(low, high)`` intensity window applied first (CT). ``percentiles``: ``(low, high)`` in
    percent, a per-volume window applied first (after ``clip``). ``nonzero``: z-score statistics over non-zero
    voxels only, zeros stay 0. ``eps`` guards a constant image (std 0 → the image becomes all zeros).
    """

    kind: str = "zscore"
    clip: Optional[Tuple[float, float]] = None
    percentiles: Optional[Tuple[float, float]] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    nonzero: bool = False
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"normalization kind must be one of {_KINDS}, got {self.kind!r}")
        if self.clip is not None:
            self.clip = (float(self.clip[0]), float(self.clip[1]))
            if self.clip[0] >= self.clip[1]:
                raise InputError(f"normalization clip low must be < high, got {self.clip}")
        if self.percentiles is not None:
            lo, hi = float(self.percentiles[0]), float(self.percentiles[1])
            if not (0.0 <= lo < hi <= 100.0):
                raise InputError(f"normalization percentiles must satisfy 0 <= low < high <= 100, got {(lo, hi)}")
            self.percentiles = (lo, hi)
        if self.kind == "fixed":
            if self.mean is None or self.std is None or float(self.std) <= 0:
                raise InputError("normalization kind 'fixed' needs mean and a positive std")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("clip", "percentiles"):
            if d[key] is not None:
                d[key] = [float(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "NormalizationConfig":
        if not d:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown normalization options {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for key in ("clip", "percentiles"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class PreprocessConfig:
    """Everything done to a case before sampling (and repeated before inference).

    ``normalization``; ``spacing_xyz``: target voxel size in mm (x, y, z), ``None`` keeps each case's own grid;
    ``label_mode``: ``"nearest"`` or ``"linear_argmax"`` for label resampling; ``orientation``: the voxel order
    (:mod:`semisupseg.orientation` code) every training case is brought into when it is read (exactly, before the
    rest), ``None`` as stored. :func:`preprocess_image` itself never reorients: inference does it around it.
    """

    normalization: NormalizationConfig = dataclasses.field(default_factory=NormalizationConfig)
    spacing_xyz: Optional[Tuple[float, float, float]] = None
    label_mode: str = "nearest"
    orientation: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.normalization, dict):
            self.normalization = NormalizationConfig.from_dict(self.normalization)
        if self.spacing_xyz is not None:
            sp = tuple(float(s) for s in self.spacing_xyz)
            if len(sp) != 3 or any(s <= 0 for s in sp):
                raise InputError(f"target spacing must be 3 positive numbers (x, y, z mm), got {self.spacing_xyz}")
            self.spacing_xyz = sp  # type: ignore[assignment]
        if self.label_mode not in ("nearest", "linear_argmax"):
            raise InputError(f"label_mode must be 'nearest' or 'linear_argmax', got {self.label_mode!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "normalization": self.normalization.to_dict(),
            "spacing_xyz": None if self.spacing_xyz is None else [float(s) for s in self.spacing_xyz],
            "label_mode": self.label_mode,
            "orientation": self.orientation,
        }

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "PreprocessConfig":
        if not d:
            return cls()
        return cls(
            normalization=NormalizationConfig.from_dict(d.get("normalization")),
            spacing_xyz=None if d.get("spacing_xyz") is None else tuple(d["spacing_xyz"]),
            label_mode=d.get("label_mode", "nearest"),
            orientation=d.get("orientation"),
        )


# ---------------------------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------------------------
def zscore(array: np.ndarray, eps: float = 1e-8, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """``(x - mean) / std`` in float32 (statistics over ``mask`` when given, in float64); std < eps → zeros."""
    a = np.asarray(array, dtype=np.float32)
    values = a[mask] if mask is not None else a
    if values.size == 0:
        return np.zeros_like(a)
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if std < eps:
        return np.zeros_like(a)
    out = ((a - mean) / std).astype(np.float32, copy=False)
    if mask is not None:
        out[~mask] = 0.0
    return out


def normalize(array: np.ndarray, cfg: Optional[NormalizationConfig] = None) -> np.ndarray:
    """Normalise one image array (any shape; a multi-channel ``(C, Z, Y, X)`` array is normalised per channel)
    according to ``cfg`` (default: per-volume z-score). Returns float32."""
    cfg = cfg or NormalizationConfig()
    a = np.asarray(array)
    if a.ndim == 4:
        return np.stack([normalize(channel, cfg) for channel in a]).astype(np.float32, copy=False)
    a = a.astype(np.float32, copy=True)
    if cfg.clip is not None:
        np.clip(a, cfg.clip[0], cfg.clip[1], out=a)
    if cfg.percentiles is not None:
        sel = a[a != 0] if cfg.nonzero and np.any(a != 0) else a
        lo, hi = np.percentile(sel, cfg.percentiles)
        np.clip(a, lo, hi, out=a)
    if cfg.kind == "none":
        return a
    if cfg.kind == "fixed":
        return ((a - float(cfg.mean)) / float(cfg.std)).astype(np.float32, copy=False)  # type: ignore[arg-type]
    mask = (np.asarray(array) != 0) if cfg.nonzero else None
    return zscore(a, cfg.eps, mask)


# ---------------------------------------------------------------------------------------------------------------
# resampling
# ---------------------------------------------------------------------------------------------------------------
def target_shape_zyx(shape_zyx: Sequence[int], spacing_xyz: Sequence[float], new_spacing_xyz: Sequence[float]
                     ) -> Tuple[int, int, int]:
    """Grid size (z, y, x) covering the same extent at ``new_spacing_xyz``: ``max(1, round(n * s / s'))``."""
    sp_zyx = np.asarray(spacing_xyz, dtype=np.float64)[::-1]
    new_zyx = np.asarray(new_spacing_xyz, dtype=np.float64)[::-1]
    n = np.maximum(1, np.round(np.asarray(shape_zyx, dtype=np.float64) * sp_zyx / new_zyx)).astype(int)
    return (int(n[0]), int(n[1]), int(n[2]))


def _resample_sitk(image: sitk.Image, size_xyz: Sequence[int], spacing_xyz: Sequence[float],
                   origin_xyz: Sequence[float], direction: Sequence[float], interpolator: int,
                   default: float = 0.0) -> sitk.Image:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size_xyz])
    f.SetOutputSpacing([float(s) for s in spacing_xyz])
    f.SetOutputOrigin([float(o) for o in origin_xyz])
    f.SetOutputDirection([float(d) for d in direction])
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(default)
    # Points beyond the outermost voxel centres (up to half a voxel at the grid's edge, or the last output voxel
    # of a grid whose extent is rounded up) take the nearest voxel's value instead of mixing in a 0 background.
    f.SetUseNearestNeighborExtrapolator(True)
    f.SetTransform(sitk.Transform())
    return f.Execute(image)


def _resample_array(array: np.ndarray, src: Volume, size_xyz: Sequence[int], spacing_xyz: Sequence[float],
                    origin_xyz: Sequence[float], direction: Sequence[float], linear: bool) -> np.ndarray:
    from semisupseg.io import to_sitk

    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    if array.ndim == 4:
        return np.stack([
            _resample_array(ch, src, size_xyz, spacing_xyz, origin_xyz, direction, linear) for ch in array
        ])
    img = to_sitk(src.with_array(array))
    out = _resample_sitk(img, size_xyz, spacing_xyz, origin_xyz, direction, interp)
    return sitk.GetArrayFromImage(out)


def _resample_label_argmax(labels: np.ndarray, src: Volume, size_xyz, spacing_xyz, origin_xyz, direction,
                           num_classes: Optional[int]) -> np.ndarray:
    values = np.unique(labels)
    n = int(num_classes) if num_classes is not None else int(values.max()) + 1
    best = None
    best_val = None
    for c in range(n):
        onehot = (labels == c).astype(np.float32)
        prob = _resample_array(onehot, src, size_xyz, spacing_xyz, origin_xyz, direction, linear=True)
        if best is None:
            best = prob
            best_val = np.zeros(prob.shape, dtype=labels.dtype)
        else:
            better = prob > best
            best = np.where(better, prob, best)
            best_val[better] = c  # type: ignore[index]
    return best_val  # type: ignore[return-value]


def resample_volume(
    volume: Volume,
    spacing_xyz: Sequence[float],
    is_label: bool = False,
    label_mode: str = "nearest",
    num_classes: Optional[int] = None,
) -> Volume:
    """``volume`` resampled to voxel size ``spacing_xyz`` (x, y, z mm) over the same physical extent.

    Images: linear (float32 result; a ``(C, Z, Y, X)`` volume per channel). Labels (``is_label=True``): nearest
    neighbour, or ``label_mode="linear_argmax"``: linear interpolation of each class's one-hot map (classes
    ``0..num_classes-1``, default up to the largest value present) then argmax. Direction is kept; the origin moves
    by half the spacing change along each axis so the grid's outer corners stay put. A volume already on the target
    spacing is returned unchanged (same object).
    """
    new_sp = np.asarray([float(s) for s in spacing_xyz], dtype=np.float64)
    old_sp = np.asarray(volume.spacing, dtype=np.float64)
    if new_sp.shape != (3,) or np.any(new_sp <= 0):
        raise InputError(f"target spacing must be 3 positive numbers (x, y, z mm), got {tuple(spacing_xyz)}")
    if np.allclose(new_sp, old_sp, rtol=1e-6, atol=0):
        return volume
    shape = target_shape_zyx(volume.shape_zyx, old_sp, new_sp)
    size_xyz = (shape[2], shape[1], shape[0])
    direction = np.asarray(volume.direction, dtype=np.float64)
    origin = np.asarray(volume.origin) + direction @ ((new_sp - old_sp) / 2.0)
    dflat = direction.reshape(-1)
    if is_label:
        if label_mode == "linear_argmax":
            array = _resample_label_argmax(volume.array, volume, size_xyz, new_sp, origin, dflat, num_classes)
        elif label_mode == "nearest":
            array = _resample_array(volume.array, volume, size_xyz, new_sp, origin, dflat, linear=False)
        else:
            raise InputError(f"label_mode must be 'nearest' or 'linear_argmax', got {label_mode!r}")
        array = array.astype(volume.array.dtype, copy=False)
    else:
        array = _resample_array(volume.array.astype(np.float32, copy=False), volume, size_xyz, new_sp, origin,
                                dflat, linear=True).astype(np.float32, copy=False)
    return Volume(array, tuple(new_sp), tuple(origin), direction.copy(), volume.path)


def resample_like(volume: Volume, reference: Volume, is_label: bool = False) -> Volume:
    """``volume`` resampled onto ``reference``'s grid (size, spacing, origin, direction): linear for images (and
    ``(C, Z, Y, X)`` maps, per channel), nearest for labels. Used to bring results back to the input geometry."""
    if volume.same_geometry(reference, tol=1e-6):
        return volume
    size_xyz = reference.size_xyz
    array = _resample_array(
        volume.array if is_label else volume.array.astype(np.float32, copy=False),
        volume, size_xyz, reference.spacing, reference.origin,
        np.asarray(reference.direction).reshape(-1), linear=not is_label,
    )
    return Volume(array.astype(volume.array.dtype if is_label else np.float32, copy=False), reference.spacing,
                  reference.origin, np.asarray(reference.direction).copy(), volume.path)


def resample_to_shape(array: Union[np.ndarray, torch.Tensor], shape_zyx: Sequence[int], order: int = 1
                      ) -> Union[np.ndarray, torch.Tensor]:
    """Resize ``array`` ``(..., Z, Y, X)`` to ``shape_zyx`` over the same extent (corner-aligned, torch
    ``align_corners=False``): ``order=1`` trilinear (float), ``order=0`` nearest (keeps dtype, labels).

    Numpy in → numpy out, tensor in → tensor out (device kept). Matches :func:`resample_volume`'s grid convention,
    e.g. for bringing a probability map computed at the training spacing back to the image's own shape.
    """
    is_np = isinstance(array, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(array)) if is_np else array
    shape = tuple(int(s) for s in shape_zyx)
    if tuple(t.shape[-3:]) == shape:
        return array
    lead = t.shape[:-3]
    x = t.reshape((-1, 1) + tuple(t.shape[-3:]))
    if order == 0:
        out = F.interpolate(x.float(), size=shape, mode="nearest-exact").to(t.dtype)
    elif order == 1:
        xf = x if x.is_floating_point() else x.float()
        out = F.interpolate(xf, size=shape, mode="trilinear", align_corners=False)
    else:
        raise InputError(f"resample_to_shape order must be 0 or 1, got {order}")
    out = out.reshape(tuple(lead) + shape)
    return out.numpy() if is_np else out


def preprocess_image(volume: Volume, cfg: Optional[PreprocessConfig] = None) -> Volume:
    """The image half of :class:`PreprocessConfig`, identical for training and inference: normalise on the
    image's own grid (statistics of the scan as acquired), then resample linearly to ``cfg.spacing_xyz`` (if set).
    Returns a float32 Volume (``(Z, Y, X)`` or ``(C, Z, Y, X)``)."""
    cfg = cfg or PreprocessConfig()
    out = volume.with_array(normalize(volume.array, cfg.normalization))
    if cfg.spacing_xyz is not None:
        out = resample_volume(out, cfg.spacing_xyz)
    return out


# ---------------------------------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------------------------------
def pad_to_size(array: np.ndarray, size_zyx: Sequence[int], value: float = 0.0, center: bool = True
                ) -> Tuple[np.ndarray, Pad]:
    """Pad the last three axes (z, y, x) of ``array`` with the constant ``value`` up to at least ``size_zyx``.

    ``center=True`` splits the padding evenly (the extra voxel after), else pads after only. Axes already large
    enough are left alone. Returns ``(padded, pad)`` with ``pad = ((z0, z1), (y0, y1), (x0, x1))`` for
    :func:`unpad`; the input array itself is returned when nothing needs padding.
    """
    shape = array.shape[-3:]
    pad = []
    for n, target in zip(shape, size_zyx):
        total = max(0, int(target) - int(n))
        before = total // 2 if center else 0
        pad.append((before, total - before))
    pad_t: Pad = (pad[0], pad[1], pad[2])
    if all(p == (0, 0) for p in pad):
        return array, pad_t
    width = [(0, 0)] * (array.ndim - 3) + list(pad)
    return np.pad(array, width, mode="constant", constant_values=value), pad_t


def unpad(array: Union[np.ndarray, torch.Tensor], pad: Pad) -> Union[np.ndarray, torch.Tensor]:
    """Undo :func:`pad_to_size` on the last three axes (works for numpy arrays and tensors)."""
    (z0, z1), (y0, y1), (x0, x1) = pad
    Z, Y, X = array.shape[-3:]
    return array[..., z0:Z - z1, y0:Y - y1, x0:X - x1]
