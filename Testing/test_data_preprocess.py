"""semisupseg.data.preprocess: normalisation, resampling (extent-preserving), padding."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from semisupseg.data.preprocess import (
    NormalizationConfig,
    PreprocessConfig,
    normalize,
    pad_to_size,
    resample_like,
    resample_to_shape,
    resample_volume,
    target_shape_zyx,
    unpad,
)
from semisupseg.errors import InputError
from semisupseg.io import read_image, read_la_h5, read_label

TEST_DATA = Path(__file__).resolve().parent / "data"
H003_IMG = TEST_DATA / "hippocampus_003_image.nii.gz"
H003_LAB = TEST_DATA / "hippocampus_003_label.nii.gz"
LA_H5 = TEST_DATA / "la_crop" / "mri_norm2.h5"


# --------------------------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------------------------
def test_zscore_default_is_per_volume():
    img = read_image(H003_IMG).array
    out = normalize(img)
    assert out.dtype == np.float32
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out.std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(out, (img - img.mean()) / img.std(), rtol=1e-4, atol=1e-4)
    # uint8 input and a constant volume
    assert normalize(np.full((3, 4, 5), 7, np.uint8)).tolist() == np.zeros((3, 4, 5)).tolist()


def test_clip_percentiles_fixed_none_nonzero():
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 400, (8, 16, 16)).astype(np.float32)
    clipped = normalize(ct, NormalizationConfig(kind="none", clip=(-200, 300)))
    assert clipped.min() == -200 and clipped.max() == 300
    z = normalize(ct, NormalizationConfig(clip=(-200, 300)))
    ref = np.clip(ct, -200, 300)
    np.testing.assert_allclose(z, (ref - ref.mean()) / ref.std(), atol=1e-4)
    p = normalize(ct, NormalizationConfig(kind="none", percentiles=(1, 99)))
    lo, hi = np.percentile(ct, [1, 99])
    assert p.min() == pytest.approx(lo) and p.max() == pytest.approx(hi)
    f = normalize(ct, NormalizationConfig(kind="fixed", mean=10.0, std=50.0))
    np.testing.assert_allclose(f, (ct - 10) / 50, rtol=1e-6)
    brain = np.zeros((4, 4, 4), np.float32)
    brain[1:3, 1:3, 1:3] = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    nz = normalize(brain, NormalizationConfig(nonzero=True))
    inside = brain > 0
    assert (nz[~inside] == 0).all()
    assert float(nz[inside].mean()) == pytest.approx(0, abs=1e-6) and float(nz[inside].std()) == pytest.approx(1)
    multi = normalize(np.stack([ct, ct * 3 + 5]))
    np.testing.assert_allclose(multi[0], multi[1], atol=1e-4)  # per channel


def test_normalization_config_round_trip_and_errors():
    cfg = NormalizationConfig(kind="zscore", clip=(-100, 200), percentiles=(0.5, 99.5))
    again = NormalizationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    pre = PreprocessConfig(normalization=cfg, spacing_xyz=(1, 1, 2), label_mode="linear_argmax")
    assert PreprocessConfig.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert PreprocessConfig(normalization={"kind": "none"}).normalization.kind == "none"
    for bad in ({"kind": "minmax"}, {"clip": (3, 1)}, {"percentiles": (50, 120)}, {"kind": "fixed", "mean": 1}):
        with pytest.raises(InputError):
            NormalizationConfig(**bad)
    with pytest.raises(InputError, match="unknown normalization options"):
        NormalizationConfig.from_dict({"kind": "zscore", "window": 3})
    with pytest.raises(InputError):
        PreprocessConfig(spacing_xyz=(1, 0, 1))
    with pytest.raises(InputError):
        PreprocessConfig(label_mode="cubic")


# --------------------------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------------------------
def _corner(vol):
    """Physical position of the outer corner of voxel (0,0,0) (x, y, z mm)."""
    return np.asarray(vol.origin) - vol.direction @ (np.asarray(vol.spacing) / 2)


def test_resample_la_h5_to_125mm_equals_block_average():
    """0.625 -> 1.25 mm by linear interpolation at block centres is exactly the 2x2x2 mean the shared LA NIfTIs
    were made with, with origin 0.3125 mm (README of ../shared/data)."""
    img, lab = read_la_h5(LA_H5)
    out = resample_volume(img, (1.25, 1.25, 1.25))
    z, y, x = img.shape_zyx
    blocks = img.array.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))
    assert out.shape_zyx == blocks.shape
    np.testing.assert_allclose(out.array, blocks, atol=1e-5)
    assert out.origin == pytest.approx((0.3125, 0.3125, 0.3125))
    np.testing.assert_allclose(_corner(out), _corner(img), atol=1e-9)


def test_resample_keeps_extent_with_flipped_direction():
    img = read_image(H003_IMG)  # direction diag(-1, -1, 1)
    out = resample_volume(img, (2.0, 1.5, 0.75))
    assert out.spacing == (2.0, 1.5, 0.75)
    assert out.shape_zyx == target_shape_zyx(img.shape_zyx, img.spacing, (2.0, 1.5, 0.75))
    assert out.shape_zyx == (47, 35, 17)
    np.testing.assert_allclose(_corner(out), _corner(img), atol=1e-9)
    np.testing.assert_allclose(out.direction, img.direction)
    assert out.array.dtype == np.float32
    assert resample_volume(img, (1.0, 1.0, 1.0)) is img


def test_label_resampling_modes():
    img = read_image(H003_IMG)
    lab = read_label(H003_LAB, img)
    up = resample_volume(lab, (0.5, 0.5, 0.5), is_label=True)
    assert up.array.dtype == lab.array.dtype
    # nearest 2x up-sampling replicates each voxel into a 2x2x2 block
    np.testing.assert_array_equal(up.array[::2, ::2, ::2], lab.array)
    np.testing.assert_array_equal(up.array[1::2, 1::2, 1::2], lab.array)
    down_nn = resample_volume(lab, (2.0, 2.0, 2.0), is_label=True)
    down_lin = resample_volume(lab, (2.0, 2.0, 2.0), is_label=True, label_mode="linear_argmax", num_classes=3)
    assert set(np.unique(down_lin.array)) <= {0, 1, 2}
    assert down_lin.shape_zyx == down_nn.shape_zyx
    # linear+argmax = the majority class of each 2x2x2 block where one class has > 4 of 8 voxels
    z, y, x = (s // 2 * 2 for s in lab.shape_zyx)
    blocks = lab.array[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(z // 2, y // 2, x // 2, 8)
    counts = np.stack([(blocks == k).sum(-1) for k in range(3)], -1)
    clear = counts.max(-1) > 4
    sub = down_lin.array[: z // 2, : y // 2, : x // 2]
    np.testing.assert_array_equal(sub[clear], counts.argmax(-1)[clear])
    with pytest.raises(InputError):
        resample_volume(lab, (2, 2, 2), is_label=True, label_mode="bogus")


def test_resample_like_returns_to_the_input_grid():
    img = read_image(H003_IMG)
    lab = read_label(H003_LAB, img)
    small = resample_volume(img, (2.0, 2.0, 2.0))
    back = resample_like(small, img)
    assert back.same_geometry(img)
    assert np.corrcoef(back.array.ravel(), img.array.ravel())[0, 1] > 0.9
    # no dark rim: a constant image stays constant through down- and up-sampling (edges extrapolate nearest)
    ones = img.with_array(np.ones_like(img.array))
    for sp in ((2.0, 2.0, 2.0), (0.6, 1.7, 3.0)):
        there = resample_volume(ones, sp)
        np.testing.assert_allclose(there.array, 1.0, atol=1e-6)
        np.testing.assert_allclose(resample_like(there, ones).array, 1.0, atol=1e-6)
    lab_small = resample_volume(lab, (0.5, 0.5, 0.5), is_label=True)
    lab_back = resample_like(lab_small, lab, is_label=True)
    assert lab_back.same_geometry(lab)
    np.testing.assert_array_equal(lab_back.array, lab.array)
    prob = img.with_array(np.stack([img.array, -img.array]))
    pb = resample_like(resample_volume(prob, (2.0, 2.0, 2.0)), img)
    assert pb.array.shape == (2,) + img.shape_zyx


def test_resample_to_shape_numpy_and_torch_match_sitk_grid():
    img, _ = read_la_h5(LA_H5)
    ref = resample_volume(img, (1.25, 1.25, 1.25))
    out = resample_to_shape(img.array, ref.shape_zyx)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.array, atol=1e-5)
    t = resample_to_shape(torch.from_numpy(np.stack([img.array, img.array])), ref.shape_zyx)
    assert isinstance(t, torch.Tensor) and t.shape == (2,) + ref.shape_zyx
    np.testing.assert_allclose(t[1].numpy(), ref.array, atol=1e-5)
    lab = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    up = resample_to_shape(lab, (4, 6, 8), order=0)
    assert up.dtype == np.uint8
    np.testing.assert_array_equal(up[::2, ::2, ::2], lab)
    assert resample_to_shape(lab, (2, 3, 4)) is lab
    with pytest.raises(InputError):
        resample_to_shape(lab, (4, 6, 8), order=3)


# --------------------------------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------------------------------
def test_pad_to_size_and_unpad():
    a = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7) + 1
    p, pad = pad_to_size(a, (6, 4, 10))
    assert p.shape == (6, 5, 10)
    assert pad == ((1, 2), (0, 0), (1, 2))
    assert p[0].sum() == 0 and p[-2:].sum() == 0 and p[:, :, 0].sum() == 0
    np.testing.assert_array_equal(unpad(p, pad), a)
    q, pad2 = pad_to_size(a, (4, 5, 8), value=-1, center=False)
    assert pad2 == ((0, 1), (0, 0), (0, 1)) and q[-1].max() == -1 and q[0, 0, 0] == 1
    c, padc = pad_to_size(np.stack([a, a]), (6, 6, 6))
    assert c.shape == (2, 6, 6, 7) and np.array_equal(unpad(c, padc)[1], a)
    same, none = pad_to_size(a, (2, 2, 2))
    assert same is a and none == ((0, 0), (0, 0), (0, 0))
    t = torch.from_numpy(p)
    assert torch.equal(unpad(t, pad), torch.from_numpy(a))
