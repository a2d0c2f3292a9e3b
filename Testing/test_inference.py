"""Sliding-window inference, segment() and post-processing on synthetic shapes with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from semisupseg.errors import Cancelled, InputError
from semisupseg.inference import (
    PAPERS_STRIDE_ZYX, SDM_FROM_HEAD, SDM_FROM_LABELS, SegmentOptions, clear_fast_path_cache, importance_map,
    keep_largest_component, label_agreement, segment, segmentation_sdm, sliding_window_inference, window_positions,
)
from semisupseg.nets import VNet, VNetConfig
from semisupseg.progress import CancelToken
from semisupseg.volume import Volume


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and lose a lot when the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Pointwise(nn.Module):
    """Voxel-wise model: foreground logit ``k * (x - t)`` — flip-equivariant and independent of the window, so
    the blended whole-image result is known exactly: ``sigmoid(k (x - t))``. Has an SDM head ``tanh(t - x)``."""

    def __init__(self, k: float = 3.0, t: float = 0.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k)))
        self.t = t

    def forward(self, x):
        z = self.k * (x[:, :1] - self.t)
        return {"seg": torch.cat([torch.zeros_like(z), z], 1), "sdm": torch.tanh(self.t - x[:, :1])}


class Constant(nn.Module):
    """Same logits everywhere: the blended result must be exactly the same constant."""

    def __init__(self, logits=(0.3, -0.2, 1.1)):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        b, _, z, y, w = x.shape
        return {"seg": self.logits.view(1, -1, 1, 1, 1).expand(b, -1, z, y, w).contiguous()}


class Shifted(nn.Module):
    """Not flip-equivariant: an asymmetric 3-tap kernel along x."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, (1, 1, 3), padding=(0, 0, 1), bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[[0.0, 0.0, 0.0]]]], [[[[1.0, 2.0, -3.0]]]]]))

    def forward(self, x):
        return {"seg": self.conv(x)}


def release_positions_xyz(shape_xyz, patch_xyz, stride_xy, stride_z):
    """The releases' test_single_case window arithmetic (x, y, z arrays, loops x, y, z), for comparison."""
    ww, hh, dd = shape_xyz
    sx = math.ceil((ww - patch_xyz[0]) / stride_xy) + 1
    sy = math.ceil((hh - patch_xyz[1]) / stride_xy) + 1
    sz = math.ceil((dd - patch_xyz[2]) / stride_z) + 1
    out = []
    for x in range(sx):
        xs = min(stride_xy * x, ww - patch_xyz[0])
        for y in range(sy):
            ys = min(stride_xy * y, hh - patch_xyz[1])
            for z in range(sz):
                zs = min(stride_z * z, dd - patch_xyz[2])
                out.append((xs, ys, zs))
    return out


# ------------------------------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("shape_xyz", [(180, 134, 88), (174, 148, 88), (148, 141, 88), (112, 112, 80), (113, 200, 81)])
def test_papers_layout_reproduces_release_positions(shape_xyz):
    ref = release_positions_xyz(shape_xyz, (112, 112, 80), 18, 4)
    ours = window_positions(shape_xyz[::-1], (80, 112, 112), stride_zyx=PAPERS_STRIDE_ZYX)
    assert [(x, y, z) for z, y, x in ours] == ref  # same windows, same order
    if shape_xyz == (180, 134, 88):
        assert len(ours) == 45


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("shape", [(80, 134, 180), (33, 40, 97), (16, 16, 16)])
def test_default_layout_covers_every_voxel_with_overlap(shape, overlap):
    patch = (16, 16, 32) if shape != (16, 16, 16) else (16, 16, 16)
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    cover = np.zeros(shape, dtype=int)
    positions = window_positions(shape, patch, overlap)
    for z, y, x in positions:
        cover[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += 1
    assert cover.min() >= 1
    for axis in range(3):
        starts = sorted(set(p[axis] for p in positions))
        assert starts[0] == 0 and starts[-1] == shape[axis] - patch[axis]
        steps = np.diff(starts)
        # neighbours share at least `overlap` of the patch, and the spacing is even (differs by <= 1 voxel)
        if len(steps):
            assert steps.max() <= max(1, int(patch[axis] * (1 - overlap)))
            assert steps.max() - steps.min() <= 1


def test_gaussian_importance_map():
    w = importance_map((16, 24, 32), "gaussian").numpy()
    assert w.dtype == np.float32 and w.max() == pytest.approx(1.0) and w.min() > 0
    assert np.allclose(w, w[::-1, ::-1, ::-1])  # symmetric about the centre
    # separable Gaussian with sigma = patch / 8 along x
    line = w[7, 11] / w[7, 11].max()  # near-centre row along x (centre is between voxels 15 and 16)
    i = np.arange(32)
    expected = np.exp(-((i - 15.5) ** 2) / (2 * 4.0 ** 2))
    assert np.allclose(line, expected / expected.max(), atol=1e-6)
    assert np.all(importance_map((4, 4, 4), "constant").numpy() == 1)
    with pytest.raises(InputError):
        importance_map((4, 4, 4), "triangle")


# ------------------------------------------------------------------------------------------------------ blending
@pytest.mark.parametrize("kwargs", [dict(blend="gaussian"), dict(blend="constant"), dict(layout="papers"),
                                    dict(overlap=0.75, batch_size=3)])
def test_constant_model_gives_constant_output(kwargs, rng):
    image = rng.normal(size=(1, 20, 37, 45)).astype(np.float32)
    out = sliding_window_inference(Constant(), image, (16, 16, 16), fast=False, **kwargs)
    expected = torch.softmax(torch.tensor([0.3, -0.2, 1.1]), 0).numpy()
    assert out["prob"].shape == (3, 20, 37, 45) and out["prob"].dtype == np.float32
    assert np.allclose(out["prob"], expected[:, None, None, None], atol=1e-5)
    assert "sdm" not in out


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_blending_places_windows_exactly(blend, rng):
    """A window-independent model: every voxel of the blended result equals the voxel-wise answer."""
    image = rng.normal(size=(1, 21, 30, 50)).astype(np.float32)
    out = sliding_window_inference(Pointwise(), image, (16, 16, 16), blend=blend, fast=False, batch_size=2)
    fg = 1 / (1 + np.exp(-3.0 * image[0]))
    assert np.allclose(out["prob"][1], fg, atol=1e-5)
    assert np.allclose(out["prob"].sum(0), 1, atol=1e-5)
    assert out["sdm"].shape == (1, 21, 30, 50)
    assert np.allclose(out["sdm"][0], np.tanh(-image[0]), atol=1e-5)


def test_input_smaller_than_patch_is_padded_and_cropped_back(rng):
    image = rng.normal(size=(1, 9, 20, 13)).astype(np.float32)
    for layout in ("default", "papers"):
        out = sliding_window_inference(Pointwise(), image, (16, 16, 16), layout=layout, fast=False)
        assert out["prob"].shape == (2, 9, 20, 13)
        assert np.allclose(out["prob"][1], 1 / (1 + np.exp(-3.0 * image[0])), atol=1e-5)


# ------------------------------------------------------------------------------------------------------ TTA / ROI
def test_flip_tta_on_equivariant_model_changes_nothing(rng):
    image = rng.normal(size=(1, 18, 20, 22)).astype(np.float32)
    plain = sliding_window_inference(Pointwise(), image, (16, 16, 16), fast=False)
    tta = sliding_window_inference(Pointwise(), image, (16, 16, 16), fast=False, tta_axes=(0, 1, 2))
    assert tta["info"]["passes_per_window"] == 8
    assert np.allclose(plain["prob"], tta["prob"], atol=1e-6)
    assert np.allclose(plain["sdm"], tta["sdm"], atol=1e-6)


def test_flip_tta_averages_flipped_predictions(rng):
    image = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)  # one window: no blending involved
    model = Shifted()
    out = sliding_window_inference(model, image, (16, 16, 16), fast=False, tta_axes=(2,))
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        p0 = torch.softmax(model(x)["seg"], 1)
        p1 = torch.flip(torch.softmax(model(torch.flip(x, [4]))["seg"], 1), [4])
    expected = ((p0 + p1) / 2)[0].numpy()
    assert np.allclose(out["prob"], expected, atol=1e-5)
    assert not np.allclose(out["prob"], p0[0].numpy(), atol=1e-3)  # the flip really mattered


def test_roi_limits_windows_and_is_background_outside(rng):
    image = rng.normal(size=(1, 40, 40, 40)).astype(np.float32) + 1.0
    roi = ((5, 12), (10, 30), (0, 40))
    out = sliding_window_inference(Pointwise(), image, (16, 16, 16), roi=roi, fast=False)
    full = sliding_window_inference(Pointwise(), image, (16, 16, 16), fast=False)
    assert out["info"]["windows"] < full["info"]["windows"]
    inside = (slice(None), slice(5, 12), slice(10, 30), slice(0, 40))
    assert np.allclose(out["prob"][inside], full["prob"][inside], atol=1e-5)
    mask = np.ones((40, 40, 40), bool)
    mask[inside[1:]] = False
    assert np.all(out["prob"][0][mask] == 1) and np.all(out["prob"][1][mask] == 0)
    assert np.all(out["sdm"][0][mask] == 1)
    with pytest.raises(InputError, match=r"roi x 0\.\.5, y 0\.\.5, z 50\.\.60 does not overlap the image of "
                                         r"40 x 40 x 40 \(x y z\) voxels"):
        sliding_window_inference(Pointwise(), image, (16, 16, 16), roi=((50, 60), (0, 5), (0, 5)))


# ------------------------------------------------------------------------------------------------------ progress
def test_progress_and_cancel(rng):
    image = rng.normal(size=(1, 16, 16, 64)).astype(np.float32)
    seen = []
    messages = []
    sliding_window_inference(Pointwise(), image, (16, 16, 16), overlap=0.0, fast=False,
                             progress=lambda f, m="": (seen.append(f), messages.append(m)))
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert messages == ["window 1/4", "window 2/4", "window 3/4", "window 4/4"]  # windows, as the summary counts
    # two windows per batch: the count still runs over windows, to the total
    messages.clear()
    sliding_window_inference(Pointwise(), image, (16, 16, 16), overlap=0.0, fast=False, batch_size=3,
                             progress=lambda f, m="": messages.append(m))
    assert messages == ["window 3/4", "window 4/4"]

    token = CancelToken()
    calls = []

    def cancel_after_first(fraction, message=""):
        calls.append(fraction)
        token.cancel()

    with pytest.raises(Cancelled):
        sliding_window_inference(Pointwise(), image, (16, 16, 16), overlap=0.0, fast=False,
                                 progress=cancel_after_first, cancel=token)
    assert calls == [0.25]  # stopped before the second batch


def test_cancel_via_stop_file(tmp_path, rng):
    stop = tmp_path / "stop"
    stop.touch()
    with pytest.raises(Cancelled):
        sliding_window_inference(Pointwise(), rng.normal(size=(1, 16, 16, 16)).astype(np.float32), (16, 16, 16),
                                 fast=False, cancel=CancelToken(stop))


# ------------------------------------------------------------------------------------------------------ fast path
def test_label_agreement():
    a = torch.zeros(1, 3, 4, 4, 4)
    a[:, 0] = 1
    assert label_agreement(a, a) == 1.0
    b = a.clone()
    b[:, 1, :2] = 2  # class 1 on half the voxels in b only
    assert label_agreement(a, b) == 0.0
    assert label_agreement(b, b) == 1.0


def test_fast_path_matches_fp32_and_falls_back(rng):
    clear_fast_path_cache()
    torch.manual_seed(0)
    model = VNet(VNetConfig(n_filters=4, sdm_head=True)).eval()
    image = rng.normal(size=(1, 24, 40, 36)).astype(np.float32)
    ref = sliding_window_inference(model, image, (16, 32, 32), fast=False)
    fast = sliding_window_inference(model, image, (16, 32, 32), fast=True)
    if fast["info"]["precision"] == "bf16":
        assert fast["info"]["fast_path_agreement"] >= 0.995
        assert label_agreement(torch.from_numpy(ref["prob"])[None], torch.from_numpy(fast["prob"])[None]) > 0.97
    else:  # the guard refused bf16: then the fast path is exact fp32 (channels_last only)
        assert np.allclose(ref["prob"], fast["prob"], atol=1e-4)
    # an impossible agreement threshold forces the fp32 fallback, which matches the reference
    clear_fast_path_cache()
    forced = sliding_window_inference(model, image, (16, 32, 32), fast=True, fast_min_dice=1.01)
    assert forced["info"]["precision"] == "fp32"
    assert np.allclose(ref["prob"], forced["prob"], atol=1e-4)
    assert np.allclose(ref["sdm"], forced["sdm"], atol=1e-4)
    # the user's model is untouched (the fast path works on a cached channels_last copy)
    assert model.block_one.conv[0].weight.is_contiguous()


# ------------------------------------------------------------------------------------------------------ largest CC
def test_keep_largest_component():
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[1:4, 1:4, 1:4] = 1          # 27 voxels
    labels[5:9, 10:15, 10:15] = 1      # 100 voxels: kept
    labels[0:2, 15:20, 0:3] = 2        # 30 voxels: kept
    labels[8, 0, 0] = 2                # 1 voxel: removed
    labels[4, 4, 4] = 1                # touches the first blob by a corner only (26-connected)
    out = keep_largest_component(labels)
    assert (out == 1).sum() == 100 and (out == 2).sum() == 30
    assert out[2, 2, 2] == 0 and out[8, 0, 0] == 0
    only2 = keep_largest_component(labels, classes=[2])
    assert (only2 == 1).sum() == (labels == 1).sum()
    vol = Volume(labels, spacing=(0.5, 0.5, 2.0), origin=(1, 2, 3))
    res = keep_largest_component(vol)
    assert isinstance(res, Volume) and res.same_geometry(vol) and np.array_equal(res.array, out)


# ------------------------------------------------------------------------------------------------------ segment()
def _card(spacing_xyz, patch_xyz, num_classes=2, label_values=None, sdm=True, normalization=None):
    from semisupseg.checkpoint import ModelCard

    names = ["background"] + [f"c{i}" for i in range(1, num_classes)]
    return ModelCard(method="test", arch="vnet", network={"num_classes": num_classes, "sdm_head": sdm},
                     class_names=names, label_values=label_values or list(range(num_classes)), in_channels=1,
                     spacing_xyz=spacing_xyz, patch_size_xyz=patch_xyz,
                     normalization=normalization or {"kind": "none"})


def _sphere(shape_zyx, spacing_xyz, radius_mm, centre_mm):
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape_zyx, spacing_xyz[::-1])], indexing="ij")
    d = np.sqrt((zz - centre_mm[2]) ** 2 + (yy - centre_mm[1]) ** 2 + (xx - centre_mm[0]) ** 2)
    return d


def test_segment_resampling_round_trip_keeps_geometry_and_shape():
    """Anisotropic input resampled to a 1 mm model grid and back: outputs have exactly the input geometry and
    the known sphere is recovered."""
    spacing = (0.7, 0.8, 1.6)
    shape = (20, 40, 45)  # z, y, x
    d = _sphere(shape, spacing, 8.0, (15.0, 16.0, 15.0))
    image = (8.0 - d).astype(np.float32)  # > 0 inside the sphere
    direction = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], float)
    vol = Volume(image, spacing, origin=(-10.0, 5.0, 2.5), direction=direction, path="sphere.nii.gz")
    card = _card((1.0, 1.0, 1.0), (16, 16, 16), label_values=[0, 7])
    result = segment(vol, Pointwise(k=2.0), card, SegmentOptions(fast=False))
    for v in (result.labels, result.probabilities, result.sdm, result.entropy):
        assert v.same_geometry(vol, tol=1e-9)
    assert result.probabilities.array.shape == (2,) + shape
    assert result.labels.array.dtype == np.uint8 and set(np.unique(result.labels.array)) <= {0, 7}
    truth = d < 8.0
    pred = result.labels.array == 7
    dice = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert dice > 0.97
    assert np.allclose(result.probabilities.array.sum(0), 1, atol=1e-5)
    assert result.entropy.array.max() <= math.log(2) + 1e-5
    assert result.info["model_grid_zyx"] == [32, 32, 31]  # 45 * 0.7 mm = 31.5 (31.4999 in floats) -> 31
    kept = segment(vol, Pointwise(k=2.0), card, SegmentOptions(fast=False, keep_largest=True, compute_sdm=False,
                                                               compute_entropy=False))
    assert kept.sdm is None and kept.entropy is None
    assert np.array_equal(kept.labels.array, keep_largest_component(result.labels.array, [7]))


class Headless(Pointwise):
    """:class:`Pointwise` without its SDM head (the network contract of ``supervised``, ``sgrs``...)."""

    def forward(self, x):
        return {"seg": super().forward(x)["seg"]}


def test_segment_sdm_of_a_headless_network_is_its_segmentations_in_mm():
    """A network without an SDM head still gives an SDM: the normalised signed distance of its own labels (seed
    paper eq. 1), measured in mm on an anisotropic grid; a network with the head gives the head's."""
    spacing = (0.7, 0.8, 1.6)  # x, y, z mm
    shape = (20, 40, 45)
    d = _sphere(shape, spacing, 8.0, (15.0, 16.0, 15.0))
    vol = Volume((8.0 - d).astype(np.float32), spacing)
    card = _card((1.0, 1.0, 1.0), (16, 16, 16), label_values=[0, 7], sdm=False)
    res = segment(vol, Headless(k=2.0), card, SegmentOptions(fast=False))
    assert res.sdm_source == SDM_FROM_LABELS and res.info["sdm_source"] == SDM_FROM_LABELS
    assert res.sdm.same_geometry(vol, tol=1e-9) and res.sdm.array.shape == (1,) + shape
    inside = res.labels.array == 7
    assert np.array_equal(res.sdm.array, segmentation_sdm(res.labels.array, [0, 7], vol.spacing_zyx))
    assert np.all(res.sdm.array[0][inside] <= 0) and np.all(res.sdm.array[0][~inside] > 0)
    assert res.sdm.array.min() == -1 and res.sdm.array.max() == 1
    # distances in mm: outside, the map is (distance to the sphere) / (its largest value), whatever the axis
    outside = ~inside & (d > 10.0)
    ratio = res.sdm.array[0][outside] / (d[outside] - 8.0)
    assert ratio.std() / ratio.mean() < 0.1
    no_sdm = segment(vol, Headless(k=2.0), card, SegmentOptions(fast=False, compute_sdm=False))
    assert no_sdm.sdm is None and no_sdm.sdm_source is None
    with_head = segment(vol, Pointwise(k=2.0), _card((1.0, 1.0, 1.0), (16, 16, 16), label_values=[0, 7]),
                        SegmentOptions(fast=False))
    assert with_head.sdm_source == SDM_FROM_HEAD
    assert not np.array_equal(with_head.sdm.array, segmentation_sdm(with_head.labels.array, [0, 7],
                                                                     vol.spacing_zyx))


def test_segment_normalises_and_checks_channels(rng):
    vol = Volume(rng.normal(loc=100.0, scale=20.0, size=(16, 16, 16)).astype(np.float32))
    card = _card((1.0, 1.0, 1.0), (16, 16, 16), normalization={"kind": "zscore"})
    res = segment(vol, Pointwise(), card, SegmentOptions(fast=False))
    z = (vol.array - vol.array.mean()) / vol.array.std()
    assert np.allclose(res.probabilities.array[1], 1 / (1 + np.exp(-3 * z)), atol=1e-4)
    with pytest.raises(InputError):
        segment([vol, vol], Pointwise(), card)
    bad = Volume(vol.array.copy())
    bad.array[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        segment(bad, Pointwise(), card)


def test_segment_roi_in_input_voxels(rng):
    vol = Volume(np.ones((20, 24, 28), np.float32), spacing=(0.5, 0.5, 0.5))
    card = _card((1.0, 1.0, 1.0), (16, 16, 16))
    res = segment(vol, Pointwise(), card, SegmentOptions(fast=False, roi=((2, 10), (4, 20), (0, 28))))
    lab = res.labels.array
    assert lab[2:10, 4:20, :].min() == 1
    assert lab.sum() == 8 * 16 * 28


def test_segment_roi_errors_speak_the_users_x_y_z():
    """An empty or inverted range is named alone, in x y z (the order of --roi X0 X1 Y0 Y1 Z0 Z1); a box beside the
    image is given whole next to the image size, both in x y z, never as the internal (z, y, x) tuples."""
    vol = Volume(np.ones((20, 24, 28), np.float32), spacing=(0.5, 0.5, 0.5))  # x 28, y 24, z 20
    card = _card((1.0, 1.0, 1.0), (16, 16, 16))

    def message(roi):
        with pytest.raises(InputError) as err:
            segment(vol, Pointwise(), card, SegmentOptions(fast=False, roi=roi))
        return str(err.value)

    # --roi 10 5 0 10 0 10: x 10..5
    assert message(((0, 10), (0, 10), (10, 5))) == "--roi x 10..5 is empty (start must be below stop)"
    assert message(((3, 3), (0, 10), (0, 10))) == "--roi z 3..3 is empty (start must be below stop)"
    assert message(((0, 10), (30, 40), (0, 10))) == ("--roi x 0..10, y 30..40, z 0..10 does not overlap the image of "
                                                     "28 x 24 x 20 (x y z) voxels")
    assert "must have 3" in message(((0, 10), (0, 10)))


def test_segment_with_vnet_multiclass_and_model_file(tmp_path, rng):
    from semisupseg.checkpoint import make_card, save_model

    torch.manual_seed(1)
    model = VNet(VNetConfig(num_classes=3, n_filters=2, sdm_head=True)).eval()
    card = make_card(model, method="supervised", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(32, 16, 16),
                     label_values=[0, 3, 5])
    path = save_model(tmp_path / "m.pt", model, card)
    vol = Volume(rng.normal(size=(20, 18, 40)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    res = segment(vol, path, options=SegmentOptions(batch_size=2))
    assert res.probabilities.array.shape == (3, 20, 18, 40) and res.sdm.array.shape == (2, 20, 18, 40)
    assert set(np.unique(res.labels.array)) <= {0, 3, 5}
    assert res.entropy.array.max() <= math.log(3) + 1e-5


def test_whole_layout_is_one_padded_window(rng, monkeypatch):
    import semisupseg.inference.sliding_window as sw

    image = rng.normal(size=(1, 21, 30, 50)).astype(np.float32)
    out = sliding_window_inference(Pointwise(), image, (16, 16, 16), layout="whole", fast=False)
    assert out["info"]["windows"] == 1 and out["info"]["window_zyx"] == [32, 32, 64]
    assert np.allclose(out["prob"][1], 1 / (1 + np.exp(-3.0 * image[0])), atol=1e-5)
    seen = []

    class Recorder(Pointwise):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return super().forward(x)

    monkeypatch.setattr(sw, "WHOLE_MAX_VOXELS", 1000)  # too big to be one window: default layout instead
    out = sliding_window_inference(Recorder(), image, (16, 16, 16), layout="whole", fast=False)
    assert out["info"]["layout"] == "default" and out["info"]["windows"] > 1
    assert set(seen) == {(16, 16, 16)}


def test_segment_multichannel_inputs(rng):
    """k-channel models take a list of k co-registered volumes, each normalised on its own."""
    a = Volume(rng.normal(loc=5.0, size=(16, 16, 20)).astype(np.float32), spacing=(1, 1, 1))
    b = a.with_array(rng.normal(loc=-3.0, scale=4.0, size=(16, 16, 20)).astype(np.float32))
    card = _card((1.0, 1.0, 1.0), (16, 16, 16), normalization={"kind": "zscore"})
    card.in_channels = 2
    res = segment([a, b], Pointwise(), card, SegmentOptions(fast=False))
    z = (a.array - a.array.mean()) / a.array.std()
    assert np.allclose(res.probabilities.array[1], 1 / (1 + np.exp(-3 * z)), atol=1e-4)
    moved = Volume(b.array, spacing=(1, 1, 1), origin=(1, 0, 0))
    with pytest.raises(InputError):
        segment([a, moved], Pointwise(), card)
    with pytest.raises(InputError):
        SegmentOptions(layout="sideways")
    with pytest.raises(InputError):
        SegmentOptions(tta_axes=(3,))


def test_fold_conv_batchnorm_keeps_the_function():
    import copy

    from semisupseg.inference import fold_conv_batchnorm

    torch.manual_seed(3)
    model = VNet(VNetConfig(n_filters=4, sdm_head=True))
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_conv_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    assert set(folded.state_dict()) != set(model.state_dict())
    x = torch.randn(2, 1, 16, 16, 32)
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert torch.allclose(a["seg"], b["seg"], atol=1e-4) and torch.allclose(a["sdm"], b["sdm"], atol=1e-5)


class WindowMean(nn.Module):
    """Depends on the whole window (logit = 3 (x - window mean)), so the blending of overlapping windows matters;
    symmetric in the axes, so it can run on the releases' x, y, z arrays unchanged."""

    def forward(self, x):
        z = 3.0 * (x - x.mean(dim=(2, 3, 4), keepdim=True))
        return {"seg": torch.cat([torch.zeros_like(z), z], 1)}


def release_test_single_case(model, image_xyz, stride_xy, stride_z, patch_xyz):
    """The releases' test_single_case arithmetic on an x, y, z array (zero padding split pad // 2 before, windows at
    min(i * stride, size - patch), softmax summed and divided by the window count), written for this test."""
    pads = [max(0, p - s) for s, p in zip(image_xyz.shape, patch_xyz)]
    before = [p // 2 for p in pads]
    padded = np.pad(image_xyz, [(b, p - b) for b, p in zip(before, pads)])
    strides = (stride_xy, stride_xy, stride_z)
    starts = [[min(i * st, s - p) for i in range(math.ceil((s - p) / st) + 1)]
              for s, p, st in zip(padded.shape, patch_xyz, strides)]
    score = np.zeros((2,) + padded.shape, np.float32)
    count = np.zeros(padded.shape, np.float32)
    for xs in starts[0]:
        for ys in starts[1]:
            for zs in starts[2]:
                sl = (slice(xs, xs + patch_xyz[0]), slice(ys, ys + patch_xyz[1]), slice(zs, zs + patch_xyz[2]))
                with torch.no_grad():
                    logits = model(torch.from_numpy(padded[sl].copy())[None, None])["seg"]
                score[(slice(None),) + sl] += torch.softmax(logits, 1)[0].numpy()
                count[sl] += 1
    score /= count[None]
    crop = tuple(slice(b, b + s) for b, s in zip(before, image_xyz.shape))
    return score[(slice(None),) + crop]


@pytest.mark.parametrize("shape_xyz", [(50, 40, 30), (50, 28, 20)])  # the second is padded in y and z
def test_papers_layout_reproduces_release_probabilities(shape_xyz, rng):
    image_xyz = rng.normal(size=shape_xyz).astype(np.float32)
    ref = release_test_single_case(WindowMean(), image_xyz, 18, 4, (32, 32, 24))
    ours = sliding_window_inference(WindowMean(), image_xyz.transpose(2, 1, 0), (24, 32, 32), layout="papers",
                                    fast=False)
    assert np.allclose(ours["prob"], ref.transpose(0, 3, 2, 1), atol=1e-5)
    default = sliding_window_inference(WindowMean(), image_xyz.transpose(2, 1, 0), (24, 32, 32), fast=False)
    assert not np.allclose(default["prob"], ours["prob"], atol=1e-3)  # the layout really matters for this model


def test_keep_largest_follows_the_card_unless_the_user_says():
    """``keep_largest=None`` takes the card's recommendation (``card.inference``); an explicit value wins."""
    shape = (16, 24, 24)
    image = np.full(shape, -1.0, np.float32)
    image[2:12, 2:12, 2:12] = 1.0      # the structure: 1000 voxels
    image[13:15, 20:22, 20:22] = 1.0   # a stray blob: 8 voxels
    vol = Volume(image, (1.0, 1.0, 1.0))
    plain, recommends = _card((1.0, 1.0, 1.0), (16, 16, 16)), _card((1.0, 1.0, 1.0), (16, 16, 16))
    recommends.inference = {"keep_largest": True}
    model = Pointwise(k=4.0)

    def fg(card, keep):
        result = segment(vol, model, card, SegmentOptions(fast=False, keep_largest=keep))
        return int((result.labels.array == 1).sum()), result.info["keep_largest"]

    assert fg(plain, None) == (1008, False)
    assert fg(recommends, None) == (1000, True)
    assert fg(recommends, False) == (1008, False) and fg(plain, True) == (1000, True)


def test_a_scan_too_large_on_the_model_grid_is_refused_before_resampling(monkeypatch):
    """40^3 voxels of 10 mm for a 1 mm model is 400^3 on the model grid: refused up front with the sizes and the
    likely cause (it was an out-of-memory error advising a smaller --batch-size, after minutes of resampling)."""
    import semisupseg.io as sio
    from semisupseg.checkpoint import make_card
    from semisupseg.errors import OutOfMemoryError
    from semisupseg.inference import segment
    from semisupseg.inference.segment import model_grid_memory_problem
    from semisupseg.nets import VNet, VNetConfig

    net = VNet(VNetConfig(num_classes=3, n_filters=2)).eval()
    card = make_card(net, method="supervised", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(32, 32, 32))
    coarse = Volume(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32), (10.0, 10.0, 10.0),
                    path="coarse.nii.gz")
    monkeypatch.setattr(sio, "available_memory", lambda: 1_000_000_000)
    with pytest.raises(OutOfMemoryError) as info:
        segment(coarse, net, card)
    text = str(info.value)
    assert text.startswith("coarse.nii.gz: resampled to the model's voxel size (1 x 1 x 1 mm)")
    assert "40 x 40 x 40 voxels of 10 x 10 x 10 mm) becomes 400 x 400 x 400 voxels" in text
    assert "Check the voxel size in its header" in text and "batch-size" not in text
    small = Volume(coarse.array[:4, :4, :4].copy(), (10.0, 10.0, 10.0))
    assert model_grid_memory_problem(small, card) is None  # 40^3 on the model grid fits


def test_exotic_arrays_given_through_the_python_api_get_their_own_message():
    """Complex voxels were cast silently (imaginary part dropped), finite float64 values beyond float32 were called
    'NaN or infinite', and a singular direction matrix was accepted."""
    from semisupseg.checkpoint import make_card
    from semisupseg.errors import InputError
    from semisupseg.inference import segment
    from semisupseg.nets import VNet, VNetConfig

    with pytest.raises(InputError, match="complex numbers"):
        Volume(np.ones((4, 5, 6), np.complex64))
    with pytest.raises(InputError, match="direction is singular"):
        Volume(np.ones((4, 5, 6), np.float32), direction=[[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    net = VNet(VNetConfig(num_classes=2, n_filters=2)).eval()
    card = make_card(net, method="supervised", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(16, 16, 16))
    huge = np.random.default_rng(0).normal(size=(8, 9, 10)) * 1e39
    with pytest.raises(InputError, match="exceed the float32 range"):
        segment(Volume(huge), net, card)
