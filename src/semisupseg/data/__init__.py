"""Datasets: cases on disk, classes, splits, preprocessing, in-memory loading and patch samplers.

Typical training set-up::

    from semisupseg.data import DatasetSpec, build_dataset, load_dataset, PreprocessConfig, PatchSampler
    ds = build_dataset(DatasetSpec(root="../shared/data/LA", labeled_key="labeled_8"))   # splits.json found
    data = load_dataset(ds, PreprocessConfig())                  # per-volume z-score, own spacing
    lab = PatchSampler(data.labeled, (40, 56, 56), seed=1)       # z, y, x
    unl = PatchSampler(data.unlabeled, (40, 56, 56), seed=2, use_labels=False)
    images, labels = lab.sample_batch(2)                         # (2, 1, 40, 56, 56), (2, 40, 56, 56)

Bundled sample data (real, small; provenance in ``semisupseg/sample_data/README.md``): ``sample_dataset("hippocampus")``
and ``sample_dataset("la")`` return dataset roots usable as ``DatasetSpec(root=...)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from semisupseg.errors import InputError
from semisupseg.data.cases import (
    Case,
    ClassInfo,
    Dataset,
    DatasetSpec,
    LoadedCase,
    LoadedDataset,
    apply_split,
    build_dataset,
    discover_cases,
    discover_unlabeled,
    load_case,
    load_cases,
    load_dataset,
    load_split,
    read_dataset_json,
)
from semisupseg.data.preprocess import (
    NormalizationConfig,
    PreprocessConfig,
    normalize,
    pad_to_size,
    preprocess_image,
    resample_like,
    resample_to_shape,
    resample_volume,
    unpad,
)
from semisupseg.data.sampling import PatchSampler, TwoStreamSampler

__all__ = [
    "Case", "ClassInfo", "Dataset", "DatasetSpec", "LoadedCase", "LoadedDataset", "apply_split", "build_dataset",
    "discover_cases", "discover_unlabeled", "load_case", "load_cases", "load_dataset", "load_split",
    "read_dataset_json", "NormalizationConfig", "PreprocessConfig", "normalize", "pad_to_size", "preprocess_image",
    "resample_like",
    "resample_to_shape", "resample_volume", "unpad", "PatchSampler", "TwoStreamSampler", "sample_data_dir",
    "sample_dataset", "sample_dataset_names",
]


def sample_data_dir() -> Path:
    """The folder of the bundled sample data (``semisupseg/sample_data``)."""
    return Path(__file__).resolve().parent.parent / "sample_data"


def sample_dataset_names() -> List[str]:
    """Names of the bundled sample datasets (sub-folders holding ``imagesTr/``)."""
    root = sample_data_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "imagesTr").is_dir())


def sample_dataset(name: str = "hippocampus") -> Path:
    """Root folder of a bundled sample dataset (``imagesTr/``, ``labelsTr/``, ``dataset.json``,
    ``splits.json``): ``"hippocampus"`` (6 Task04_Hippocampus cases, 3 classes) or ``"la"`` (3 left-atrium
    LGE-MRI cases, 1.25 mm, 2 classes)."""
    root = sample_data_dir() / name.lower()
    if not (root / "imagesTr").is_dir():
        raise InputError(f"no bundled sample dataset {name!r}; available: {sample_dataset_names()}")
    return root
