"""semisupseg.data.sampling / augment: crops, the augmentation policies (none / dihedral / papers), foreground bias,
reproducibility, resume."""
from __future__ import annotations

import io as pyio
import json

import numpy as np
import pytest
import torch

from semisupseg.data import DatasetSpec, build_dataset, load_dataset, sample_dataset
from semisupseg.data.augment import augmentation_name, draw_rot_flip, rot_flip, tta_axes_for
from semisupseg.data.cases import LoadedCase
from semisupseg.data.sampling import PatchSampler, TwoStreamSampler
from semisupseg.errors import InputError


def _coded(shape, case=0):
    """An image whose voxel values encode (case, z, y, x), and a label derived from the value."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    image = (case * 1_000_000 + z * 10_000 + y * 100 + x).astype(np.float32)[None]
    label = ((z + y + x) % 3).astype(np.uint8)
    return image, label


def _find_transform(patch, volume):
    """(k, flip_axis, start) such that the patch is rot_flip(crop(volume)); None if there is none."""
    for k in range(4):
        for axis in (None, -1, -2):
            # undo: flip then rotate back
            undone = patch if axis is None else np.flip(patch, axis)
            undone = np.rot90(undone, -k, axes=(-2, -1))
            v0 = int(undone[0, 0, 0, 0])
            z0, y0, x0 = v0 // 10_000 % 100, v0 // 100 % 100, v0 % 100
            sz = undone.shape[1:]
            crop = volume[:, z0:z0 + sz[0], y0:y0 + sz[1], x0:x0 + sz[2]]
            if crop.shape == undone.shape and np.array_equal(crop, undone):
                return k, axis, (z0, y0, x0)
    return None


@pytest.mark.parametrize("policy", ["papers", "dihedral"])
def test_patches_are_rotated_flipped_crops_with_aligned_labels(policy):
    image, label = _coded((20, 30, 26))
    s = PatchSampler([(image, label)], (8, 12, 10), seed=3, augment=policy)
    ks, axes = set(), set()
    for _ in range(60):
        img_p, lab_p = s.sample()
        assert img_p.shape == (1, 8, 12, 10) and img_p.dtype == np.float32
        assert lab_p.shape == (8, 12, 10) and lab_p.dtype == np.int64
        found = _find_transform(img_p, image)
        assert found is not None
        k, axis, _ = found
        ks.add(k % 2)
        axes.add(axis)
        # the label moved with the image: label = (z + y + x) % 3 of the source voxel
        v = img_p[0].astype(np.int64)
        np.testing.assert_array_equal(lab_p, (v // 10_000 % 100 + v // 100 % 100 + v % 100) % 3)
    assert ks == {0, 1}  # odd rotations happen (non-square in-plane patch still comes out (8, 12, 10))
    if policy == "papers":
        assert None not in axes  # the papers always flip (see test below)
    else:
        assert None in axes


def test_paper_flip_is_always_a_reflection_dihedral_is_not():
    rng = np.random.default_rng(0)
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    combos = [draw_rot_flip(rng, "papers") for _ in range(400)]
    assert all(axis in (-1, -2) for _, axis in combos)
    assert {k for k, _ in combos} == {0, 1, 2, 3}
    outs = {rot_flip(a, k, ax).tobytes() for k, ax in combos}
    # rotate-then-flip-x/y gives the 4 reflections of the square, never the identity (the papers' behaviour)
    assert len(outs) == 4 and a.tobytes() not in outs
    draws = [rot_flip(a, *draw_rot_flip(rng, "dihedral")).tobytes() for _ in range(4000)]
    counts = {d: draws.count(d) for d in set(draws)}
    # all 8 symmetries of the square, the stored orientation among them, each about 1/8 of the time
    assert len(counts) == 8 and a.tobytes() in counts
    assert all(abs(c / len(draws) - 1 / 8) < 0.03 for c in counts.values())
    assert {draw_rot_flip(rng, "none") for _ in range(10)} == {(0, None)}
    with pytest.raises(ValueError):
        rot_flip(a, 1, 0)


def test_policy_names_legacy_booleans_and_tta_axes():
    assert augmentation_name(True) == "papers" and augmentation_name(False) == "none"
    assert augmentation_name(" Dihedral ") == "dihedral"
    with pytest.raises(ValueError, match="none, dihedral, papers"):
        augmentation_name("always")
    with pytest.raises(InputError, match="augmentation"):
        PatchSampler([np.zeros((4, 4, 4), np.float32)], (2, 2, 2), augment="mirror", use_labels=False)
    # flip TTA only over flips the policy trained on
    assert tta_axes_for("none") == () and tta_axes_for("dihedral") == (1, 2) == tta_axes_for(True)


def test_papers_policy_draws_as_before_the_policies_had_names():
    # the generator is consumed exactly as the old flip="always" code did: resumed old runs draw the same patches
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    old = []
    for _ in range(50):
        k = int(rng_b.integers(0, 4))
        old.append((k, -1 if int(rng_b.integers(0, 2)) == 0 else -2))
    assert [draw_rot_flip(rng_a, True) for _ in range(50)] == old


def test_default_sampler_shows_patches_unaugmented():
    image, label = _coded((12, 16, 16))
    s = PatchSampler([(image, label)], (4, 8, 6), seed=2)
    for _ in range(20):
        img_p, _ = s.sample()
        k, axis, _ = _find_transform(img_p, image)
        assert (k, axis) == (0, None)


def test_no_augmentation_gives_plain_uniform_crops():
    image, label = _coded((12, 16, 16))
    s = PatchSampler([(image, label)], (4, 8, 8), seed=1, augment=False)
    starts = []
    for _ in range(300):
        p, _ = s.sample()
        k, axis, start = _find_transform(p, image)
        assert (k, axis) == (0, None)
        starts.append(start)
    starts = np.array(starts)
    assert starts.min(0).tolist() == [0, 0, 0] and starts.max(0).tolist() == [8, 8, 8]  # every position reachable


def test_small_volumes_are_padded_with_zeros():
    image = np.ones((1, 5, 6, 9), np.float32)
    label = np.ones((5, 6, 9), np.uint8)
    s = PatchSampler([(image, label)], (8, 10, 12), seed=0, augment=False)
    for _ in range(5):
        p, lab = s.sample()
        assert p.shape == (1, 8, 10, 12) and lab.shape == (8, 10, 12)
        assert p.sum() == 5 * 6 * 9 and lab.sum() == 5 * 6 * 9  # the whole volume, inside zero padding
    # with rotation the in-plane padding is to max(y, x) = 12 so every rotated patch fits
    s = PatchSampler([(image, label)], (8, 10, 12), seed=0, augment="dihedral")
    assert s.images[0].shape == (1, 8, 12, 12)
    for _ in range(20):
        p, lab = s.sample()
        assert p.shape == (1, 8, 10, 12) and set(np.unique(p)) <= {0.0, 1.0}
        assert np.array_equal(p[0] > 0, lab > 0)


def test_case_order_is_a_permutation_per_pass_and_index_selects_the_case():
    cases = [_coded((6, 8, 8), case=c) for c in range(5)]
    s = PatchSampler(cases, (4, 4, 4), seed=11)
    seen = [int(s.sample()[0][0, 0, 0, 0]) // 1_000_000 for _ in range(15)]
    for p in range(3):
        assert sorted(seen[5 * p:5 * p + 5]) == [0, 1, 2, 3, 4]
    assert seen[:5] != seen[5:10] or seen[5:10] != seen[10:]
    assert all(int(s.sample(3)[0][0, 0, 0, 0]) // 1_000_000 == 3 for _ in range(5))
    with pytest.raises(InputError, match="out of range"):
        s.sample(5)


def test_foreground_biased_crops():
    image = np.zeros((1, 40, 40, 40), np.float32)
    label = np.zeros((40, 40, 40), np.uint8)
    label[2:4, 2:4, 2:4] = 1  # a tiny object in one corner
    label[36:38, 30:32, 35:37] = 2  # and another class far away
    hits = {}
    for p_fg in (0.0, 1.0):
        s = PatchSampler([(image, label)], (8, 8, 8), seed=5, foreground_prob=p_fg)
        labs = [s.sample()[1] for _ in range(200)]
        hits[p_fg] = (np.mean([l.max() > 0 for l in labs]), {int(c) for l in labs for c in np.unique(l)})
    assert hits[1.0][0] == 1.0  # every crop contains the centred foreground voxel
    assert hits[1.0][1] == {0, 1, 2}  # both classes are drawn
    assert hits[0.0][0] < 0.25
    half = PatchSampler([(image, label)], (8, 8, 8), seed=5, foreground_prob=0.5)
    frac = np.mean([half.sample()[1].max() > 0 for _ in range(400)])
    assert 0.4 < frac < 0.75


def test_seeded_reproducible_and_resumable_through_json_and_weights_only():
    cases = [_coded((10, 14, 12), case=c) for c in range(3)]
    a = PatchSampler(cases, (4, 6, 6), seed=42, foreground_prob=0.3)
    b = PatchSampler(cases, (4, 6, 6), seed=42, foreground_prob=0.3)
    c = PatchSampler(cases, (4, 6, 6), seed=43, foreground_prob=0.3)
    xa, ya = a.sample_batch(6)
    xb, yb = b.sample_batch(6)
    xc, _ = c.sample_batch(6)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and not np.array_equal(xa, xc)
    state = a.state_dict()
    expected = a.sample_batch(7)
    # JSON
    restored = PatchSampler(cases, (4, 6, 6), seed=0, foreground_prob=0.3)
    restored.load_state_dict(json.loads(json.dumps(state)))
    got = restored.sample_batch(7)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    # torch.save / torch.load(weights_only=True)
    buf = pyio.BytesIO()
    torch.save({"sampler": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["sampler"]
    restored2 = PatchSampler(cases, (4, 6, 6), seed=0, foreground_prob=0.3)
    restored2.load_state_dict(loaded)
    assert np.array_equal(restored2.sample_batch(7)[0], expected[0])

    def plain(o):
        if isinstance(o, dict):
            return all(isinstance(k, str) and plain(v) for k, v in o.items())
        if isinstance(o, list):
            return all(plain(v) for v in o)
        return type(o) in (int, str, float, bool)

    assert plain(state)
    with pytest.raises(InputError, match="data changed"):
        PatchSampler(cases[:2], (4, 6, 6)).load_state_dict(state)


def test_unlabeled_sampler_and_two_stream_batches():
    ds = build_dataset(DatasetSpec(root=str(sample_dataset("hippocampus")), labeled_key="labeled_2"))
    data = load_dataset(ds)
    lab = PatchSampler(data.labeled, (16, 24, 24), seed=1, foreground_prob=0.5)
    # labeled images may also serve as unlabeled
    unl = PatchSampler(data.unlabeled + [c.without_label() for c in data.labeled], (16, 24, 24), seed=2,
                       use_labels=False)
    x, y = unl.sample_batch(3)
    assert x.shape == (3, 1, 16, 24, 24) and y is None
    two = TwoStreamSampler(lab, unl, batch_size=4, labeled_bs=2)
    images, labels = two.next()
    assert images.shape == (4, 1, 16, 24, 24) and labels.shape == (2, 16, 24, 24)
    assert set(np.unique(labels)) <= {0, 1, 2}
    state = json.loads(json.dumps(two.state_dict()))
    nxt = two.next()
    two2 = TwoStreamSampler(PatchSampler(data.labeled, (16, 24, 24), seed=9, foreground_prob=0.5),
                            PatchSampler(data.unlabeled + [c.without_label() for c in data.labeled], (16, 24, 24),
                                         seed=9, use_labels=False), 4, 2)
    two2.load_state_dict(state)
    again = two2.next()
    assert np.array_equal(nxt[0], again[0]) and np.array_equal(nxt[1], again[1])
    with pytest.raises(InputError, match="labeled batch size"):
        TwoStreamSampler(lab, unl, 2, 3)


def test_sampler_errors():
    image, label = _coded((6, 6, 6))
    with pytest.raises(InputError, match="at least one case"):
        PatchSampler([], (2, 2, 2))
    with pytest.raises(InputError, match="patch size"):
        PatchSampler([(image, label)], (2, 2))
    with pytest.raises(InputError, match="foreground_prob"):
        PatchSampler([(image, label)], (2, 2, 2), foreground_prob=1.5)
    with pytest.raises(InputError, match="has no label"):
        PatchSampler([LoadedCase("u", image)], (2, 2, 2))
    with pytest.raises(InputError, match="label shape"):
        PatchSampler([(image, label[:-1])], (2, 2, 2))
    with pytest.raises(InputError, match="channels"):
        PatchSampler([(image, label), (np.concatenate([image, image]), label)], (2, 2, 2))
    # an unlabeled sampler drops labels it is given and never returns them
    s = PatchSampler([(image, label)], (2, 2, 2), use_labels=False)
    assert s.sample()[1] is None


def test_real_la_sampler_throughput(la_dir):
    """Patches from real LA cases at the papers' 1.25 mm-equivalent patch size (40, 56, 56)."""
    import time

    ds = build_dataset(DatasetSpec(root=str(la_dir), labeled_key="labeled_8"))
    ds.unlabeled = []
    data = load_dataset(ds)
    s = PatchSampler(data.labeled, (40, 56, 56), seed=0, foreground_prob=0.0)
    t = time.perf_counter()
    x, y = s.sample_batch(16)
    dt = (time.perf_counter() - t) / 16
    assert x.shape == (16, 1, 40, 56, 56) and set(np.unique(y)) == {0, 1}
    assert dt < 0.05  # a crop is a slice + rot/flip copy: far below a training step
