"""The bundled sample data: present, small, documented, loadable, real."""
from __future__ import annotations

import json

import numpy as np
import pytest

from semisupseg.data import (
    DatasetSpec,
    build_dataset,
    load_dataset,
    sample_data_dir,
    sample_dataset,
    sample_dataset_names,
)
from semisupseg.errors import InputError
from semisupseg.io import read_image, read_label


def test_sample_data_is_small_and_documented():
    root = sample_data_dir()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
    readme = (root / "README.md").read_text(encoding="utf-8")
    for needle in ("CC-BY-SA 4.0", "Antonelli", "Xiong", "Medical Image Analysis", "byte-for-byte"):
        assert needle in readme
    assert sample_dataset_names() == ["hippocampus", "la"]
    with pytest.raises(InputError, match="available"):
        sample_dataset("brats")


@pytest.mark.parametrize("name,n,classes", [("hippocampus", 6, 3), ("la", 4, 2)])
def test_sample_datasets_index_and_load(name, n, classes):
    root = sample_dataset(name)
    index = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert index["numTraining"] == n == len(index["training"])
    for entry in index["training"]:
        img = read_image(root / entry["image"])
        lab = read_label(root / entry["label"], img, num_classes=classes)
        assert img.array.dtype == np.float32 and lab.array.max() == classes - 1
    split_key = {"hippocampus": "labeled_2", "la": "labeled_1"}[name]
    ds = build_dataset(DatasetSpec(root=str(root), labeled_key=split_key))
    data = load_dataset(ds)
    assert data.num_classes == classes and len(data.labeled) >= 1 and len(data.unlabeled) == 2
    assert data.classes.names[0] == "background"


def test_sample_la_matches_shared_data(la_dir):
    root = sample_dataset("la")
    for p in sorted((root / "imagesTr").glob("*.nii.gz")):
        assert p.read_bytes() == (la_dir / "imagesTr" / p.name).read_bytes()


def test_sample_hippocampus_matches_release(hippocampus_dir):
    root = sample_dataset("hippocampus")
    for sub in ("imagesTr", "labelsTr"):
        for p in sorted((root / sub).glob("*.nii.gz")):
            assert p.read_bytes() == (hippocampus_dir / sub / p.name).read_bytes()
