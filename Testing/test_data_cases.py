"""semisupseg.data.cases: discovery of labeled/unlabeled folders, splits, classes, loading — and the rule that
labels of cases treated as unlabeled are never read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import semisupseg.data.cases as cases_mod
import semisupseg.io as sio
from semisupseg.data import (
    Case,
    ClassInfo,
    DatasetSpec,
    PreprocessConfig,
    apply_split,
    build_dataset,
    discover_cases,
    discover_unlabeled,
    load_dataset,
    load_split,
    read_dataset_json,
    sample_dataset,
)
from semisupseg.errors import InputError

TEST_DATA = Path(__file__).resolve().parent / "data"
HIPPO = sample_dataset("hippocampus")
HIPPO_IDS = ["hippocampus_008", "hippocampus_011", "hippocampus_015", "hippocampus_017", "hippocampus_023",
             "hippocampus_025"]


def _copy_hippo(dst: Path, ids=HIPPO_IDS, image_suffix="", label_dir="labelsTr") -> Path:
    (dst / "imagesTr").mkdir(parents=True)
    (dst / label_dir).mkdir(parents=True)
    for cid in ids:
        shutil.copyfile(HIPPO / "imagesTr" / f"{cid}.nii.gz", dst / "imagesTr" / f"{cid}{image_suffix}.nii.gz")
        shutil.copyfile(HIPPO / "labelsTr" / f"{cid}.nii.gz", dst / label_dir / f"{cid}.nii.gz")
    return dst


# --------------------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------------------
def test_msd_layout_discovery():
    cases = discover_cases(HIPPO)
    assert [c.case_id for c in cases] == HIPPO_IDS
    for c in cases:
        assert c.labeled and c.image_path.parent.name == "imagesTr" and c.label_path.parent.name == "labelsTr"
        assert c.image_path.name == c.label_path.name


def test_nnunet_channel_suffix_tolerated_and_multichannel(tmp_path):
    root = _copy_hippo(tmp_path / "ds", HIPPO_IDS[:3], image_suffix="_0000")
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == HIPPO_IDS[:3]
    assert cases[0].image_path.name == "hippocampus_008_0000.nii.gz"
    # a second channel per case -> tuple of paths; loading stacks the channels (each z-scored on its own)
    for cid in HIPPO_IDS[:3]:
        shutil.copyfile(HIPPO / "imagesTr" / f"{cid}.nii.gz", root / "imagesTr" / f"{cid}_0001.nii.gz")
    cases = discover_cases(root)
    assert all(isinstance(c.image_path, tuple) and len(c.image_path) == 2 for c in cases)
    ds = build_dataset(DatasetSpec(root=str(root)))
    data = load_dataset(ds)
    assert data.in_channels == 2
    np.testing.assert_allclose(data.labeled[0].image[0], data.labeled[0].image[1])


def test_channel_suffix_heuristics(tmp_path):
    src = HIPPO / "imagesTr" / f"{HIPPO_IDS[0]}.nii.gz"
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):  # one subject's numbered scans: 3 cases, not one 3-channel case
        shutil.copyfile(src, series / f"scan_{i:04d}.nii.gz")
    assert [c.case_id for c in discover_unlabeled(series)] == ["scan_0000", "scan_0001", "scan_0002"]
    mm = tmp_path / "multimodal"
    mm.mkdir()
    for base in ("a", "b"):
        for ch in range(2):
            shutil.copyfile(src, mm / f"{base}_{ch:04d}.nii.gz")
    cases = discover_unlabeled(mm)
    assert [c.case_id for c in cases] == ["a", "b"] and all(len(c.channel_paths) == 2 for c in cases)
    (mm / "b_0001.nii.gz").unlink()  # inconsistent: names kept as they are when no labels say otherwise
    assert len(discover_unlabeled(mm)) == 3
    labs = tmp_path / "labs"
    labs.mkdir()
    for base in ("a", "b"):
        shutil.copyfile(HIPPO / "labelsTr" / f"{HIPPO_IDS[0]}.nii.gz", labs / f"{base}.nii.gz")
    with pytest.raises(InputError, match="inconsistent nnU-Net channel files"):
        discover_cases(images=mm, labels=labs)


def test_separate_image_and_label_folders_any_format(tmp_path):
    img_dir, lab_dir = tmp_path / "imgs", tmp_path / "labs"
    img_dir.mkdir()
    lab_dir.mkdir()
    shutil.copyfile(TEST_DATA / "hippocampus_033_image.nrrd", img_dir / "h033.nrrd")
    shutil.copyfile(TEST_DATA / "hippocampus_033_label.nrrd", lab_dir / "h033.nrrd")
    shutil.copyfile(TEST_DATA / "hippocampus_003_image.nii.gz", img_dir / "h003.nii.gz")
    shutil.copyfile(TEST_DATA / "hippocampus_003_label.nii.gz", lab_dir / "h003.nii.gz")
    (img_dir / "notes.txt").write_text("ignored")
    (img_dir / "._h003.nii.gz").write_bytes(b"mac resource fork")  # hidden files are skipped
    cases = discover_cases(images=img_dir, labels=lab_dir)
    assert [(c.case_id, c.image_path.name, c.label_path.name) for c in cases] == [
        ("h003", "h003.nii.gz", "h003.nii.gz"), ("h033", "h033.nrrd", "h033.nrrd")]
    data = load_dataset(build_dataset(DatasetSpec(images=str(img_dir), labels=str(lab_dir))))
    assert data.classes.label_values == [0, 1, 2]
    assert {int(v) for v in np.unique(data.labeled[0].label)} == {0, 1, 2}  # the float32 label file


def test_missing_and_orphan_labels(tmp_path):
    root = _copy_hippo(tmp_path / "ds", HIPPO_IDS[:3])
    (root / "labelsTr" / f"{HIPPO_IDS[2]}.nii.gz").unlink()
    with pytest.raises(InputError, match="1 images have no label") as err:
        discover_cases(root)
    assert "imagesTr" in str(err.value)
    cases = discover_cases(root, allow_missing_labels=True)
    assert [c.labeled for c in cases] == [True, True, False]
    ds = build_dataset(DatasetSpec(root=str(root)))  # a labeled folder with some unlabeled images
    assert [c.case_id for c in ds.unlabeled] == [HIPPO_IDS[2]] and len(ds.labeled) == 2
    assert "1 images of the labeled folder have no label file" in ds.summary()
    shutil.copyfile(HIPPO / "labelsTr" / f"{HIPPO_IDS[3]}.nii.gz", root / "labelsTr" / "stray.nii.gz")
    with pytest.raises(InputError, match="no matching image"):
        discover_cases(root, allow_missing_labels=True)


def test_discovery_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover_cases(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected imagesTr"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(InputError, match="no readable images"):
        discover_unlabeled(tmp_path / "empty")
    with pytest.raises(InputError, match="no labeled cases"):
        build_dataset(DatasetSpec(root=str(HIPPO), split=str(_split(tmp_path, {"train": HIPPO_IDS[:2],
                                                                               "none": []})), labeled_key="none"))


def test_unlabeled_folder_images_only(tmp_path):
    root = _copy_hippo(tmp_path / "u", HIPPO_IDS[:2])
    cases = discover_unlabeled(root)  # finds imagesTr/, ignores labelsTr/
    assert [c.case_id for c in cases] == HIPPO_IDS[:2] and not any(c.labeled for c in cases)
    cases = discover_unlabeled(root / "imagesTr")
    assert len(cases) == 2
    ds = build_dataset(DatasetSpec(root=str(HIPPO), unlabeled=[str(root / "imagesTr")]))
    assert (len(ds.labeled), len(ds.val)) == (4, 2)  # the sample's splits.json is picked up: train 4, val 2
    # ids clashing with labeled cases are renamed, not merged
    assert [c.case_id for c in ds.unlabeled] == [f"imagesTr/{i}" for i in HIPPO_IDS[:2]]


def test_la_h5_layout(tmp_path):
    root = tmp_path / "la"
    for cid in ("A", "B"):
        (root / cid).mkdir(parents=True)
        shutil.copyfile(TEST_DATA / "la_crop" / "mri_norm2.h5", root / cid / "mri_norm2.h5")
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == ["A", "B"] and cases[0].image_path == cases[0].label_path
    ds = build_dataset(DatasetSpec(root=str(root), h5_spacing_xyz=(1.0, 1.0, 1.0)))
    data = load_dataset(ds)
    assert data.labeled[0].spacing_xyz == (1.0, 1.0, 1.0)
    assert data.labeled[0].image.shape == (1, 16, 36, 40)
    assert data.classes.label_values == [0, 1]


# --------------------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------------------
def _split(tmp_path: Path, content) -> Path:
    p = tmp_path / "split.json"
    p.write_text(json.dumps(content))
    return p


def test_split_labeled_key_num_labeled_and_val(tmp_path):
    split = {"train": HIPPO_IDS[:4], "labeled_2": HIPPO_IDS[:2], "val": HIPPO_IDS[4:], "note": "comment"}
    path = _split(tmp_path, split)
    assert load_split(path) == {k: v for k, v in split.items() if k != "note"}
    cases = discover_cases(HIPPO)
    lab, unl, val = apply_split(cases, load_split(path), labeled_key="labeled_2")
    assert [c.case_id for c in lab] == HIPPO_IDS[:2]
    assert [c.case_id for c in unl] == HIPPO_IDS[2:4] and all(c.label_path is None for c in unl)
    assert [c.case_id for c in val] == HIPPO_IDS[4:] and all(c.labeled for c in val)
    lab, unl, val = apply_split(cases, load_split(path), num_labeled=3)
    assert [c.case_id for c in lab] == HIPPO_IDS[:3] and [c.case_id for c in unl] == [HIPPO_IDS[3]]
    lab, unl, _ = apply_split(cases, {"train": HIPPO_IDS[:4]})
    assert len(lab) == 4 and unl == []
    # the bundled sample split is found automatically
    ds = build_dataset(DatasetSpec(root=str(HIPPO), labeled_key="labeled_2"))
    assert (len(ds.labeled), len(ds.unlabeled), len(ds.val)) == (2, 2, 2)


def test_split_labeled_without_a_split_file_names_the_cli_option(tmp_path):
    """A labeled list asked for where no split JSON exists: the error names --split-labeled / data.split_labeled and
    the two ways to give the split (--split FILE, splits.json in the dataset folder)."""
    root = _copy_hippo(tmp_path / "ds", HIPPO_IDS[:2])
    assert not (root / "splits.json").exists()
    with pytest.raises(InputError) as err:
        build_dataset(DatasetSpec(root=str(root), labeled_key="labeled_2"))
    msg = str(err.value)
    assert msg == (f"--split-labeled (data.split_labeled) 'labeled_2' names a list of a split JSON, but there is none: "
                   f"give --split FILE or put splits.json in the dataset folder ({root})")
    assert "labeled_key" not in msg


def test_split_errors(tmp_path):
    cases = discover_cases(HIPPO)
    with pytest.raises(InputError, match="not in the dataset"):
        apply_split(cases, {"train": HIPPO_IDS[:2] + ["ghost"]})
    with pytest.raises(InputError, match="no 'labeled_9' list"):
        apply_split(cases, {"train": HIPPO_IDS}, labeled_key="labeled_9")
    with pytest.raises(InputError, match="overlaps"):
        apply_split(cases, {"train": HIPPO_IDS[:4], "val": HIPPO_IDS[3:]})
    with pytest.raises(InputError, match="not in 'train'"):
        apply_split(cases, {"train": HIPPO_IDS[:2], "lab": HIPPO_IDS[2:3]}, labeled_key="lab")
    with pytest.raises(InputError, match="num_labeled"):
        apply_split(cases, {"train": HIPPO_IDS[:2]}, num_labeled=5)
    bad = _split(tmp_path, {"train": [1, 2]})
    with pytest.raises(InputError, match="list of case id strings") as err:
        load_split(bad)
    assert str(bad) in str(err.value)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="cannot read split JSON"):
        load_split(broken)


def test_real_la_split(la_dir):
    ds = build_dataset(DatasetSpec(root=str(la_dir), labeled_key="labeled_8"))
    split = json.loads((la_dir / "splits.json").read_text(encoding="utf-8"))
    assert [c.case_id for c in ds.labeled] == split["train"][:8] == split["labeled_8"]
    assert [c.case_id for c in ds.unlabeled] == split["train"][8:]
    assert all(c.label_path is None for c in ds.unlabeled)
    ds16 = build_dataset(DatasetSpec(root=str(la_dir), labeled_key="labeled_16"))
    assert (len(ds16.labeled), len(ds16.unlabeled)) == (16, 64)


# --------------------------------------------------------------------------------------------------------------
# labels of unlabeled cases are never read
# --------------------------------------------------------------------------------------------------------------
def test_labels_of_unlabeled_cases_are_never_read(tmp_path, monkeypatch):
    root = _copy_hippo(tmp_path / "ds")
    split = _split(tmp_path, {"train": HIPPO_IDS[:4], "labeled_2": HIPPO_IDS[:2], "val": HIPPO_IDS[4:]})
    # corrupt the labels of the cases the split makes unlabeled: any attempt to read them would fail loudly
    for cid in HIPPO_IDS[2:4]:
        (root / "labelsTr" / f"{cid}.nii.gz").write_bytes(b"this is not a NIfTI file")
    opened = []
    real_read_volume = sio.read_volume

    def spy(path, *a, **k):
        opened.append(Path(path).resolve())
        return real_read_volume(path, *a, **k)

    monkeypatch.setattr(sio, "read_volume", spy)
    ds = build_dataset(DatasetSpec(root=str(root), split=str(split), labeled_key="labeled_2"))
    assert opened == []  # discovery and splitting open nothing
    data = load_dataset(ds)
    assert [c.case_id for c in data.unlabeled] == HIPPO_IDS[2:4]
    assert all(c.label is None for c in data.unlabeled)
    unl_labels = {(root / "labelsTr" / f"{cid}.nii.gz").resolve() for cid in HIPPO_IDS[2:4]}
    assert opened and not (set(opened) & unl_labels)
    assert (root / "imagesTr" / f"{HIPPO_IDS[2]}.nii.gz").resolve() in opened  # their images were read
    # control: the same corruption on a labeled case is detected
    ds_all = build_dataset(DatasetSpec(root=str(root), split=str(split), labeled_key="train"))
    with pytest.raises(InputError, match="corrupt|cannot read") as err:
        load_dataset(ds_all)
    assert "labelsTr" in str(err.value)


def test_h5_label_of_unlabeled_case_never_read(tmp_path):
    import h5py

    root = tmp_path / "la"
    for cid in ("A", "B"):
        (root / cid).mkdir(parents=True)
        with h5py.File(TEST_DATA / "la_crop" / "mri_norm2.h5", "r") as src, \
                h5py.File(root / cid / "mri_norm2.h5", "w") as dst:
            dst["image"] = src["image"][()]
            dst["label"] = src["label"][()] if cid == "A" else np.zeros((2, 2, 2), np.uint8)  # B: broken label
    split = _split(tmp_path, {"train": ["A", "B"], "labeled_1": ["A"]})
    data = load_dataset(build_dataset(DatasetSpec(root=str(root), split=str(split), labeled_key="labeled_1")))
    assert data.unlabeled[0].case_id == "B" and data.unlabeled[0].label is None
    with pytest.raises(InputError, match="does not match 'image' shape"):
        load_dataset(build_dataset(DatasetSpec(root=str(root), split=str(split))))


# --------------------------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------------------------
def test_dataset_json_formats(tmp_path):
    msd = read_dataset_json(HIPPO / "dataset.json")
    assert msd.names == ["background", "Anterior", "Posterior"] and msd.label_values == [0, 1, 2]
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    c = read_dataset_json(v2)
    assert c.names == ["background", "liver", "tumour"] and c.num_classes == 3
    regions = tmp_path / "r.json"
    regions.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2]}}))
    with pytest.raises(InputError, match="region-based"):
        read_dataset_json(regions)


def test_classinfo_maps_label_values_to_indices():
    c = ClassInfo(["background", "atrium", "vessel"], [0, 255, 7])
    lab = np.array([[[0, 255, 7, 7, 0]]])
    np.testing.assert_array_equal(c.to_indices(lab), [[[0, 1, 2, 2, 0]]])
    with pytest.raises(InputError, match=r"label values \[3\] are outside"):
        c.to_indices(np.array([[[0, 3]]]), "x.nii.gz")
    with pytest.raises(InputError, match=r"label values \[3\]"):
        ClassInfo.default(3).to_indices(np.array([[[0, 3]]]))
    assert ClassInfo.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(InputError, match="duplicate"):
        ClassInfo(["a", "b"], [1, 1])


def test_declared_classes_reject_unexpected_label_values(tmp_path):
    spec = DatasetSpec(root=str(HIPPO), labeled_key="labeled_2", label_values=[0, 1],
                       class_names=["background", "hippocampus"])
    with pytest.raises(InputError, match=r"label values \[2\] are outside") as err:
        load_dataset(build_dataset(spec))
    assert "labelsTr" in str(err.value)


# --------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------
def test_load_dataset_preprocesses_in_memory():
    ds = build_dataset(DatasetSpec(root=str(HIPPO), labeled_key="labeled_2"))
    events = []
    data = load_dataset(ds, PreprocessConfig(), progress=lambda f, m: events.append(f))
    assert events[-1] == pytest.approx(1.0) and len(events) == 6
    assert data.classes.names == ["background", "Anterior", "Posterior"]
    for lc in data.labeled + data.val:
        assert lc.image.dtype == np.float32 and lc.image.ndim == 4 and lc.image.shape[0] == 1
        assert lc.label.dtype == np.uint8 and lc.label.shape == lc.image.shape[1:]
        assert abs(float(lc.image.mean())) < 1e-4 and float(lc.image.std()) == pytest.approx(1.0, abs=1e-3)
        assert lc.geometry["spacing_xyz"] == [1.0, 1.0, 1.0]
    # resampling to 1.5 mm (labels per-class linear + argmax)
    data2 = load_dataset(ds, PreprocessConfig(spacing_xyz=(1.5, 1.5, 1.5), label_mode="linear_argmax"))
    lc, ref = data2.labeled[0], data.labeled[0]
    assert lc.spacing_xyz == (1.5, 1.5, 1.5)
    assert lc.image.shape[1:] == tuple(int(round(n / 1.5)) for n in ref.image.shape[1:])
    assert set(np.unique(lc.label)) == {0, 1, 2}
    # each class keeps about its volume in mm^3
    for k in (1, 2):
        v_ref = np.count_nonzero(ref.label == k)
        v_new = np.count_nonzero(lc.label == k) * 1.5 ** 3
        assert v_new == pytest.approx(v_ref, rel=0.25)


def test_training_preprocessing_equals_inference_preprocessing():
    """load_dataset (training) and preprocess_image (what inference calls) give the same array."""
    from semisupseg.data import preprocess_image
    from semisupseg.io import read_image

    cfg = PreprocessConfig(spacing_xyz=(1.3, 0.9, 1.6))
    data = load_dataset(build_dataset(DatasetSpec(root=str(HIPPO), labeled_key="labeled_2")), cfg)
    vol = preprocess_image(read_image(HIPPO / "imagesTr" / f"{HIPPO_IDS[0]}.nii.gz"), cfg)
    assert data.labeled[0].case_id == HIPPO_IDS[0]
    np.testing.assert_array_equal(data.labeled[0].image[0], vol.array)
    assert data.labeled[0].spacing_xyz == vol.spacing == (1.3, 0.9, 1.6)


def test_load_cancel(tmp_path):
    from semisupseg.errors import Cancelled
    from semisupseg.progress import CancelToken

    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        load_dataset(build_dataset(DatasetSpec(root=str(HIPPO))), cancel=tok)


def test_case_helpers():
    c = Case("x", Path("a.nii.gz"), Path("b.nii.gz"))
    assert c.labeled and not c.as_unlabeled().labeled and c.channel_paths == (Path("a.nii.gz"),)
    assert cases_mod.DatasetSpec.from_dict(DatasetSpec(root="r", unlabeled=["u"]).to_dict()).root == "r"
    with pytest.raises(InputError, match="unknown dataset options"):
        DatasetSpec.from_dict({"rooot": "x"})
