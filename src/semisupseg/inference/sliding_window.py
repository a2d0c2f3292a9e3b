"""Sliding-window inference over a whole (normalised) image, with bounded memory.

Axis order: every array/tensor here is **z, y, x** (``(C, Z, Y, X)`` images, ``(B, C, Z, Y, X)`` batches); patch sizes
and strides are given as ``(z, y, x)`` voxels.

Two window layouts:

* ``"default"``: windows overlapping by ``overlap`` (fraction of the patch, 0.5 by default), spread evenly over
  each axis (as nnU-Net: ``n = ceil((S - P) / (P * (1 - overlap))) + 1`` windows whose starts are evenly spaced from
  0 to ``S - P``), blended with a Gaussian importance map (sigma = 1/8 of the patch side, as nnU-Net and MONAI)
  or uniformly.
* ``"papers"``: the layout of the reference releases' ``test_single_case`` (UA-MT, SASSNet, DTC, MC-Net, SGRS-Net):
  fixed strides 18 voxels in-plane (x, y) and 4 through-plane (z), ``n = ceil((S - P) / stride) + 1`` windows per
  axis at ``min(i * stride, S - P)``, uniform averaging of the softmax outputs, and zero padding (split
  ``pad // 2`` before, the rest after) of any axis smaller than the patch. Selecting it reproduces their numbers.
* ``"whole"``: the network is fully convolutional, so the whole image (zero padded to a multiple of 16 per side
  and at least the patch) is one window, when it has at most ``WHOLE_MAX_VOXELS`` voxels (else the default layout
  is used). No window seams and no voxel computed twice: the cheapest layout on CPU, but the network sees more
  context than in training (results differ slightly from windowed inference; measure before relying on it).

Outputs are accumulated into one probability buffer (and one SDM buffer) while the windows are computed, so memory
is bounded by the output size plus one batch of windows — there is never a list of all window outputs.
"""
from __future__ import annotations

import itertools
import math
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from semisupseg.errors import InputError
from semisupseg.progress import CancelToken, ProgressCallback
from semisupseg.runtime import autocast, bf16_supported, resolve_device, to_channels_last

#: strides (z, y, x) of the releases' ``test_single_case``: ``stride_z=4``, ``stride_xy=18``
PAPERS_STRIDE_ZYX: Tuple[int, int, int] = (4, 18, 18)
LAYOUTS = ("default", "papers", "whole")
#: ``"whole"`` layout: the padded image is used as one window when it has at most this many voxels (measured on
#: CPU for a V-Net n_filters 16 in bf16: ~210 bytes per padded voxel above the process, 560 MB for an LA scan
#: padded to 96 x 144 x 192 = 2.65 M voxels; so the cap keeps the whole-image pass under ~0.9 GB)
WHOLE_MAX_VOXELS = 4_000_000
#: ``"whole"`` layout: each padded side is a multiple of this (the V-Net halves the grid 4 times)
WHOLE_MULTIPLE = 16
BLENDS = ("gaussian", "constant")
#: label agreement (Dice) the bf16 fast path must reach against fp32 on a probe window, else it is not used
FAST_MIN_DICE = 0.995

ZYX = Tuple[int, int, int]
Box = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]


# ----------------------------------------------------------------------------------------------------------- layout
def release_window_starts(size: int, patch: int, stride: int) -> List[int]:
    """Window starts along one axis as the releases compute them: ``min(i * stride, size - patch)`` for
    ``i < ceil((size - patch) / stride) + 1`` (``size >= patch``)."""
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}: pad first")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = math.ceil((size - patch) / stride) + 1
    return [min(i * stride, size - patch) for i in range(n)]


def even_window_starts(size: int, patch: int, overlap: float) -> List[int]:
    """Window starts along one axis, ``overlap`` (fraction of the patch) at least, spread evenly over ``[0, size -
    patch]`` (first window at 0, last at ``size - patch``), as nnU-Net does."""
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}: pad first")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    target = max(1, int(patch * (1.0 - overlap)))
    n = math.ceil((size - patch) / target) + 1
    if n == 1:
        return [0]
    step = (size - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


def window_positions(shape_zyx: Sequence[int], patch_zyx: Sequence[int], overlap: float = 0.5,
                     stride_zyx: Optional[Sequence[int]] = None) -> List[ZYX]:
    """All window corners ``(z, y, x)`` over an image of ``shape_zyx`` (each side >= the patch).

    With ``stride_zyx`` the releases' rule (:func:`release_window_starts`), else the even rule with ``overlap``.
    The order is z fastest, then y, then x — the loop order of the releases (x outer, z inner).
    """
    if stride_zyx is not None:
        if any(int(st) > int(p) for st, p in zip(stride_zyx, patch_zyx)):
            raise InputError(f"stride {tuple(stride_zyx)} larger than the patch {tuple(patch_zyx)} would leave "
                             "voxels without any window")
        per_axis = [release_window_starts(s, p, st) for s, p, st in zip(shape_zyx, patch_zyx, stride_zyx)]
    else:
        per_axis = [even_window_starts(s, p, overlap) for s, p in zip(shape_zyx, patch_zyx)]
    zs, ys, xs = per_axis
    return [(z, y, x) for x in xs for y in ys for z in zs]


def importance_map(patch_zyx: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125,
                   floor: float = 1e-6) -> torch.Tensor:
    """Blending weight of each voxel of a window, ``(Z, Y, X)`` float32, maximum 1.

    ``"gaussian"``: ``prod_axis exp(-(i - (P - 1) / 2)^2 / (2 (sigma_scale * P)^2))`` (symmetric about the window
    centre), floored at ``floor`` so border voxels covered by a single window keep their value; ``"constant"``: 1.
    """
    if blend == "constant":
        return torch.ones(tuple(int(p) for p in patch_zyx), dtype=torch.float32)
    if blend != "gaussian":
        raise InputError(f"blend must be one of {BLENDS}, got {blend!r}")
    w = torch.ones((), dtype=torch.float64)
    for axis, p in enumerate(patch_zyx):
        i = torch.arange(int(p), dtype=torch.float64)
        sigma = max(sigma_scale * p, 1e-3)
        g = torch.exp(-((i - (p - 1) / 2.0) ** 2) / (2.0 * sigma ** 2))
        shape = [1, 1, 1]
        shape[axis] = int(p)
        w = w * g.reshape(shape)
    w = w / w.max()
    return w.clamp_min(floor).to(torch.float32)


def symmetric_padding(shape_zyx: Sequence[int], patch_zyx: Sequence[int]) -> List[Tuple[int, int]]:
    """``(before, after)`` zero padding per axis that makes every side at least the patch (releases' split:
    ``pad // 2`` before)."""
    pads = []
    for s, p in zip(shape_zyx, patch_zyx):
        total = max(0, int(p) - int(s))
        pads.append((total // 2, total - total // 2))
    return pads


# ---------------------------------------------------------------------------------------------------- model calls
def _model_outputs(model: Callable, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(probabilities (B, C, ...) float32, sdm (B, C-1, ...) float32 or None)`` of one forward pass.

    ``model(x)`` may return a dict (``"seg"`` logits and optional ``"sdm"``, the package's network contract; the
    model's ``probabilities`` method turns logits into probabilities) or a plain tensor of softmax logits.
    """
    out = model(x)
    if isinstance(out, dict):
        seg = out["seg"]
        sdm = out.get("sdm")
    else:
        seg, sdm = out, None
    prob_fn = getattr(model, "probabilities", None)
    prob = prob_fn(seg.float()) if callable(prob_fn) else torch.softmax(seg.float(), dim=1)
    return prob.float(), (None if sdm is None else sdm.float())


def _flip_sets(tta_axes: Sequence[int]) -> List[Tuple[int, ...]]:
    """Every subset of the spatial ``tta_axes`` (0=z, 1=y, 2=x), the empty one (no flip) first."""
    axes = sorted(set(int(a) for a in tta_axes))
    if any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"flip TTA axes are spatial axes 0 (z), 1 (y), 2 (x); got {list(tta_axes)}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _predict_batch(model: Callable, x: torch.Tensor, flips: List[Tuple[int, ...]], channels_last: bool,
                   bf16: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Probabilities and SDM of a batch of windows ``(B, C_in, Z, Y, X)``, averaged over the flips (TTA)."""
    prob_sum: Optional[torch.Tensor] = None
    sdm_sum: Optional[torch.Tensor] = None
    for flip in flips:
        dims = [d + 2 for d in flip]
        xi = torch.flip(x, dims) if dims else x
        if channels_last:
            xi = to_channels_last(xi)
        with autocast(xi.device, enabled=bf16):
            prob, sdm = _model_outputs(model, xi)
        if dims:
            prob = torch.flip(prob, dims)
            sdm = None if sdm is None else torch.flip(sdm, dims)
        prob_sum = prob if prob_sum is None else prob_sum + prob
        if sdm is not None:
            sdm_sum = sdm if sdm_sum is None else sdm_sum + sdm
    assert prob_sum is not None
    n = float(len(flips))
    return prob_sum / n, (None if sdm_sum is None else sdm_sum / n)


# ------------------------------------------------------------------------------------------------------ fast path
def label_agreement(prob_a: torch.Tensor, prob_b: torch.Tensor) -> float:
    """Agreement of the argmax labels of two ``(B, C, ...)`` probability tensors: the mean Dice over the foreground
    classes present in either (1.0 when neither has foreground)."""
    la, lb = prob_a.argmax(1), prob_b.argmax(1)
    dices = []
    for c in range(1, prob_a.shape[1]):
        a, b = la == c, lb == c
        denom = int(a.sum()) + int(b.sum())
        if denom:
            dices.append(2.0 * int((a & b).sum()) / denom)
    return float(np.mean(dices)) if dices else 1.0


class _FastPathEntry:
    __slots__ = ("signature", "model", "bf16", "agreement")

    def __init__(self, signature: tuple, model: nn.Module, bf16: bool, agreement: Optional[float]):
        self.signature, self.model, self.bf16, self.agreement = signature, model, bf16, agreement


#: model → its channels_last copy and the cached bf16 decision (dropped with the model)
_FAST_CACHE: "weakref.WeakKeyDictionary[nn.Module, Dict[str, _FastPathEntry]]" = weakref.WeakKeyDictionary()


def _weights_signature(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place (optimiser step, ``load_state_dict``)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple((t.data_ptr(), t._version) for t in tensors)


def clear_fast_path_cache() -> None:
    """Forget the cached fast-path models and bf16 decisions (tests, or after changing torch settings)."""
    _FAST_CACHE.clear()


def fold_conv_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm3d`` that directly follows a ``Conv3d``/``ConvTranspose3d`` inside an
    ``nn.Sequential`` into that convolution's weights and bias (in place; for inference copies only).

    Same function up to float rounding (``y = gamma (conv(x) - mean) / sqrt(var + eps) + beta`` is again a
    convolution); saves the batch-norm pass over every feature map (measured 5-10 % of the V-Net forward).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        if not any(isinstance(a, (nn.Conv3d, nn.ConvTranspose3d)) and isinstance(b, nn.BatchNorm3d)
                   and b.track_running_stats and b.running_mean is not None for a, b in zip(layers, layers[1:])):
            continue
        fused: List[nn.Module] = []
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if (isinstance(layer, (nn.Conv3d, nn.ConvTranspose3d)) and isinstance(nxt, nn.BatchNorm3d)
                    and nxt.track_running_stats and nxt.running_mean is not None):
                fused.append(fuse_conv_bn_eval(layer.eval(), nxt.eval(),
                                               transpose=isinstance(layer, nn.ConvTranspose3d)))
                i += 2
            else:
                fused.append(layer)
                i += 1
        for name in list(module._modules):
            del module._modules[name]
        for j, layer in enumerate(fused):
            module.add_module(str(j), layer)
    return model


def _fast_model(model: nn.Module, device: torch.device) -> _FastPathEntry:
    """The eval copy of ``model`` on ``device`` with batch norm folded into the convolutions, in channels_last_3d
    (cached per model, device and weights)."""
    import copy

    signature = _weights_signature(model)
    per_model = _FAST_CACHE.setdefault(model, {})
    entry = per_model.get(str(device))
    if entry is None or entry.signature != signature:
        fast = copy.deepcopy(model).to(device).eval()
        fast = fold_conv_batchnorm(fast).to(memory_format=torch.channels_last_3d)
        entry = _FastPathEntry(signature, fast, False, None)
        per_model[str(device)] = entry
    return entry


Outputs = Tuple[torch.Tensor, Optional[torch.Tensor]]


def _check_bf16(entry: _FastPathEntry, probe: torch.Tensor, min_dice: float) -> Optional[Outputs]:
    """Decide once per model/device/weights whether bf16 autocast keeps the labels of the fp32 result: one probe
    batch through both; bf16 is used when the label Dice >= ``min_dice`` (``min_dice <= 0`` skips the check).

    Returns the probe's outputs in the chosen precision when they were computed now (the caller reuses them
    instead of running that window again), else ``None``.
    """
    if entry.agreement is not None:
        return None
    if not bf16_supported(probe.device):
        entry.bf16, entry.agreement = False, float("nan")
        return None
    if min_dice <= 0:
        entry.bf16, entry.agreement = True, float("nan")
        return None
    ref = _predict_batch(entry.model, probe, [()], channels_last=True, bf16=False)
    low = _predict_batch(entry.model, probe, [()], channels_last=True, bf16=True)
    entry.agreement = label_agreement(ref[0], low[0])
    entry.bf16 = entry.agreement >= min_dice
    return low if entry.bf16 else ref


# ------------------------------------------------------------------------------------------------------- the loop
def roi_problem(box_zyx: Sequence[Tuple[int, int]], shape_zyx: Sequence[int], name: str = "roi") -> Optional[str]:
    """What is wrong with a voxel box ``((z0, z1), (y0, y1), (x0, x1))`` (stop exclusive) on an image of
    ``shape_zyx``, said in the x y z order of ``--roi X0 X1 Y0 Y1 Z0 Z1`` (``name`` opens the message), or
    ``None`` when it overlaps the image. An empty or inverted range is named alone (``"--roi x 10..5 is empty
    (start must be below stop)"``); a box beside the image is given whole, next to the image size in x y z."""
    axes = list(zip("xyz", reversed(list(box_zyx)), reversed(list(shape_zyx))))
    for axis, (a, b), _ in axes:
        if b <= a:
            return f"{name} {axis} {a}..{b} is empty (start must be below stop)"
    if any(min(int(n), b) <= max(0, a) for _, (a, b), n in axes):
        box = ", ".join(f"{axis} {a}..{b}" for axis, (a, b), _ in axes)
        size = " x ".join(str(int(n)) for _, _, n in axes)
        return f"{name} {box} does not overlap the image of {size} (x y z) voxels"
    return None


def normalise_roi(roi: Optional[Box], shape_zyx: Sequence[int], name: str = "roi", path=None) -> Box:
    """``roi`` ``((z0, z1), (y0, y1), (x0, x1))`` as integers clipped to ``shape_zyx`` (``None``: the whole image).
    A malformed box or one :func:`roi_problem` refuses is an :class:`InputError` (``name`` opens the message,
    ``path`` names the image)."""
    if roi is None:
        return tuple((0, int(s)) for s in shape_zyx)  # type: ignore[return-value]
    try:
        box = tuple((int(a), int(b)) for a, b in roi)
    except (TypeError, ValueError) as exc:
        raise InputError(f"roi must be ((z0, z1), (y0, y1), (x0, x1)) voxel bounds, got {roi!r}", path) from exc
    if len(box) != 3:
        raise InputError(f"roi must have 3 (start, stop) pairs in z, y, x order, got {roi!r}", path)
    problem = roi_problem(box, shape_zyx, name)
    if problem:
        raise InputError(problem, path)
    return tuple((max(0, a), min(int(s), b)) for (a, b), s in zip(box, shape_zyx))  # type: ignore[return-value]


def sliding_window_inference(
    model: Callable,
    image: Union[np.ndarray, torch.Tensor],
    patch_size_zyx: Sequence[int],
    overlap: float = 0.5,
    blend: str = "gaussian",
    stride_zyx: Optional[Sequence[int]] = None,
    batch_size: int = 1,
    device: Union[str, torch.device] = "auto",
    fast: bool = True,
    layout: str = "default",
    tta_axes: Sequence[int] = (),
    roi: Optional[Box] = None,
    sigma_scale: float = 0.125,
    fast_min_dice: float = FAST_MIN_DICE,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Dict[str, Any]:
    """Class probabilities of a whole image by sliding windows.

    Args:
        model: a network following the package contract (``model(x)`` → dict with ``"seg"`` logits, optional
            ``"sdm"``, and a ``probabilities`` method), or any callable returning softmax logits ``(B, C, ...)``.
        image: the normalised image ``(C_in, Z, Y, X)`` (or ``(Z, Y, X)`` for one channel), numpy or torch.
        patch_size_zyx: window size ``(z, y, x)`` in voxels (a multiple of 16 for the V-Net).
        overlap: fraction of the patch shared by neighbouring windows in the ``"default"`` layout.
        blend: ``"gaussian"`` or ``"constant"`` (uniform averaging).
        stride_zyx: explicit strides ``(z, y, x)`` (release rule for the starts); overrides ``overlap``.
        batch_size: windows per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        fast: use the fast path: a ``channels_last_3d`` copy of the model (batch norm folded into the
            convolutions) and bf16 autocast when supported and
            when its labels agree with fp32 on a probe window (Dice >= ``fast_min_dice``; decided once per model,
            device and weights; ``fast_min_dice <= 0`` trusts bf16 without the check). ``fast=False`` runs the
            model as it is, in fp32. Inference always runs under ``torch.inference_mode`` in eval mode.
        layout: ``"default"``, ``"papers"`` (releases' strides ``PAPERS_STRIDE_ZYX`` and uniform blending;
            overrides ``stride_zyx``, ``overlap`` and ``blend``) or ``"whole"`` (one window over the padded image,
            see the module doc; falls back to ``"default"`` above ``WHOLE_MAX_VOXELS``).
        tta_axes: spatial axes (0=z, 1=y, 2=x) to flip for test-time augmentation; the outputs of every
            combination of flips (``2 ** len(tta_axes)`` passes) are flipped back and averaged.
        roi: ``((z0, z1), (y0, y1), (x0, x1))`` voxel bounds (stop exclusive) limiting the windows: only the box
            is computed (with the image around it as context when the box is smaller than a patch); outside it the
            result is background (probability 1 for class 0, SDM +1).
        sigma_scale: Gaussian sigma as a fraction of the patch side.
        progress: ``callback(fraction, message)`` called after every batch of windows.
        cancel: polled between batches; raises :class:`~semisupseg.errors.Cancelled` when set.

    Returns:
        dict with ``"prob"`` ``(C, Z, Y, X)`` float32 numpy (sums to 1 over C), ``"sdm"`` ``(C-1, Z, Y, X)``
        float32 when the model has an SDM head, and ``"info"`` (windows, precision, label agreement of the fast
        path check, seconds).
    """
    t_start = time.perf_counter()
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "papers":
        # the releases' strides; a patch smaller than a stride (never in the papers) would leave holes: clamp
        stride_zyx = tuple(min(s, int(p)) for s, p in zip(PAPERS_STRIDE_ZYX, patch_size_zyx))
        blend = "constant"
    if blend not in BLENDS:
        raise InputError(f"blend must be one of {BLENDS}, got {blend!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    patch = tuple(int(p) for p in patch_size_zyx)
    if len(patch) != 3 or min(patch) < 1:
        raise InputError(f"patch size must be 3 positive sides (z, y, x), got {patch_size_zyx}")
    dev = resolve_device(device)
    progress = progress or (lambda f, m="": None)

    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    img = img.detach().to("cpu", torch.float32)
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4:
        raise InputError(f"image must be (C, Z, Y, X) or (Z, Y, X), got shape {tuple(img.shape)}")
    full_shape = tuple(img.shape[1:])

    # ROI: the windows cover the box only, grown to at least one patch inside the image where possible
    box = normalise_roi(roi, full_shape)
    crop = []
    for (a, b), s, p in zip(box, full_shape, patch):
        length = max(b - a, min(p, s))
        a = min(max(0, a - (length - (b - a)) // 2), s - length)
        crop.append((a, a + length))
    sub = img[:, crop[0][0]:crop[0][1], crop[1][0]:crop[1][1], crop[2][0]:crop[2][1]]

    # pad axes smaller than the patch (zeros: the mean of a z-scored image), as the releases do
    used_layout = layout
    if layout == "whole":
        whole = tuple(max(p, int(math.ceil(s / WHOLE_MULTIPLE)) * WHOLE_MULTIPLE)
                      for s, p in zip(sub.shape[1:], patch))
        if int(np.prod(whole)) <= WHOLE_MAX_VOXELS:
            patch, blend = whole, "constant"
        else:
            used_layout = "default"
    pads = symmetric_padding(sub.shape[1:], patch)
    if any(p != (0, 0) for p in pads):
        flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants last axis first
        sub = torch.nn.functional.pad(sub, flat, mode="constant", value=0.0)
    work_shape = tuple(sub.shape[1:])
    positions = window_positions(work_shape, patch, overlap, stride_zyx)
    weights = importance_map(patch, blend, sigma_scale)
    flips = _flip_sets(tta_axes)

    # the model to run: the fast-path copy, or the model itself in eval mode
    was_training = getattr(model, "training", None)
    entry: Optional[_FastPathEntry] = None
    if fast and isinstance(model, nn.Module):
        entry = _fast_model(model, dev)
        run_model: Callable = entry.model
    else:
        run_model = model
        if isinstance(model, nn.Module):
            model.to(dev).eval()
    channels_last = entry is not None

    acc: Dict[str, torch.Tensor] = {}
    weight_acc = torch.zeros(work_shape, dtype=torch.float32)
    info: Dict[str, Any] = {"windows": len(positions), "layout": used_layout, "window_zyx": list(patch),
                            "passes_per_window": len(flips), "batch_size": batch_size, "precision": "fp32",
                            "fast_path_agreement": None, "device": str(dev)}

    def accumulate(batch_pos: List[ZYX], prob: torch.Tensor, sdm: Optional[torch.Tensor], w: torch.Tensor) -> None:
        for key, value in (("prob", prob), ("sdm", sdm)):
            if value is None:
                continue
            value = (value * w).cpu()
            if key not in acc:
                acc[key] = torch.zeros((value.shape[1],) + work_shape, dtype=torch.float32)
            for i, (z, y, xx) in enumerate(batch_pos):
                acc[key][:, z:z + patch[0], y:y + patch[1], xx:xx + patch[2]] += value[i]
        for z, y, xx in batch_pos:
            weight_acc[z:z + patch[0], y:y + patch[1], xx:xx + patch[2]] += weights

    try:
        with torch.inference_mode():
            w_dev = weights.to(dev)
            todo = list(positions)
            if entry is not None:
                # probe: the window nearest the centre (most likely to contain the structure)
                centre = [(s - p) / 2.0 for s, p in zip(work_shape, patch)]
                pz, py, px = min(positions, key=lambda q: sum((a - c) ** 2 for a, c in zip(q, centre)))
                probe = sub[None, :, pz:pz + patch[0], py:py + patch[1], px:px + patch[2]].to(dev)
                probe_out = _check_bf16(entry, probe, fast_min_dice)
                info["precision"] = "bf16" if entry.bf16 else "fp32"
                info["fast_path_agreement"] = entry.agreement
                if probe_out is not None and flips == [()]:
                    accumulate([(pz, py, px)], probe_out[0], probe_out[1], w_dev)  # not computed twice
                    todo.remove((pz, py, px))
            bf16 = entry.bf16 if entry is not None else False
            n_batches = max(1, math.ceil(len(todo) / batch_size))
            for b in range(n_batches):
                if cancel is not None:
                    cancel.raise_if_cancelled("inference")
                batch_pos = todo[b * batch_size:(b + 1) * batch_size]
                if batch_pos:
                    x = torch.stack([sub[:, z:z + patch[0], y:y + patch[1], xx:xx + patch[2]]
                                     for z, y, xx in batch_pos]).to(dev)
                    prob, sdm = _predict_batch(run_model, x, flips, channels_last, bf16)
                    accumulate(batch_pos, prob, sdm, w_dev)
                done = len(positions) - len(todo) + min((b + 1) * batch_size, len(todo))  # the probe counts too
                progress((b + 1) / n_batches, f"window {done}/{len(positions)}")
            prob_acc = acc["prob"]
            sdm_acc = acc.get("sdm")
            prob_acc /= weight_acc
            if sdm_acc is not None:
                sdm_acc /= weight_acc
    finally:
        if entry is None and was_training:
            model.train()  # type: ignore[union-attr]

    # undo the padding, paste the box into a full-size background result
    (pz0, _), (py0, _), (px0, _) = pads
    cz, cy, cx = (b - a for a, b in crop)
    prob_acc = prob_acc[:, pz0:pz0 + cz, py0:py0 + cy, px0:px0 + cx]
    if sdm_acc is not None:
        sdm_acc = sdm_acc[:, pz0:pz0 + cz, py0:py0 + cy, px0:px0 + cx]
    n_classes = prob_acc.shape[0]
    if tuple(prob_acc.shape[1:]) == full_shape and box == tuple((0, s) for s in full_shape):
        prob_np = prob_acc.numpy()
        sdm_np = None if sdm_acc is None else sdm_acc.numpy()
    else:
        prob_np = np.zeros((n_classes,) + full_shape, dtype=np.float32)
        prob_np[0] = 1.0
        sdm_np = None if sdm_acc is None else np.ones((sdm_acc.shape[0],) + full_shape, dtype=np.float32)
        inner = tuple(slice(a - ca, b - ca) for (a, b), (ca, _) in zip(box, crop))
        outer = tuple(slice(a, b) for a, b in box)
        prob_np[(slice(None),) + outer] = prob_acc[(slice(None),) + inner].numpy()
        if sdm_np is not None:
            sdm_np[(slice(None),) + outer] = sdm_acc[(slice(None),) + inner].numpy()  # type: ignore[index]
    info["seconds"] = time.perf_counter() - t_start
    result: Dict[str, Any] = {"prob": np.ascontiguousarray(prob_np, dtype=np.float32), "info": info}
    if sdm_np is not None:
        result["sdm"] = np.ascontiguousarray(sdm_np, dtype=np.float32)
    return result
