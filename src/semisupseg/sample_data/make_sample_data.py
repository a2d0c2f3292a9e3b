"""Rebuild the bundled sample data from ../shared/data (the exact processing documented in README.md).

Run from the repository root:  python src/semisupseg/sample_data/make_sample_data.py [SHARED_DATA_DIR]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HIPPO_IDS = ["hippocampus_008", "hippocampus_011", "hippocampus_015", "hippocampus_017", "hippocampus_023",
             "hippocampus_025"]
LA_COUNT = 4  # the first four ids of the LA release's training list (also its first labeled cases)


def main(shared: Path) -> None:
    # --- Task04_Hippocampus: files copied byte for byte -----------------------------------------------------
    src = shared / "Task04_Hippocampus"
    dst = HERE / "hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for cid in HIPPO_IDS:
            shutil.copyfile(src / sub / f"{cid}.nii.gz", dst / sub / f"{cid}.nii.gz")
    (dst / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus (sample)",
        "description": "6 cases of the Medical Segmentation Decathlon Task04_Hippocampus training set, unchanged",
        "reference": "Antonelli et al., The Medical Segmentation Decathlon, Nature Communications 13, 4128 (2022)",
        "licence": "CC-BY-SA 4.0",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "numTraining": len(HIPPO_IDS),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in HIPPO_IDS],
    }, indent=1) + "\n")
    (dst / "splits.json").write_text(json.dumps({
        "note": "demo split: the first 2 of train labeled, the other 2 unlabeled, 2 held out for validation",
        "train": HIPPO_IDS[:4], "labeled_2": HIPPO_IDS[:2], "val": HIPPO_IDS[4:],
    }, indent=1) + "\n")

    # --- LA (2018 Atrial Segmentation Challenge, 1.25 mm version in ../shared/data/LA): copied byte for byte ---
    src = shared / "LA"
    train = json.loads((src / "splits.json").read_text(encoding="utf-8"))["train"]
    ids = train[:LA_COUNT]
    dst = HERE / "la"
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for cid in ids:
            shutil.copyfile(src / sub / f"{cid}.nii.gz", dst / sub / f"{cid}.nii.gz")
    (dst / "dataset.json").write_text(json.dumps({
        "name": "Left atrium LGE-MRI (sample)",
        "description": "4 cases of the 2018 Atrial Segmentation Challenge training set as preprocessed by the "
                       "UA-MT release (mri_norm2.h5: z-scored, cropped), 2x2x2 block-averaged to 1.25 mm",
        "reference": "Xiong et al., A global benchmark of algorithms for segmenting the left atrium from late "
                     "gadolinium-enhanced cardiac MRI, Medical Image Analysis 67, 101832 (2021)",
        "licence": "see README.md",
        "tensorImageSize": "3D",
        "modality": {"0": "LGE-MRI"},
        "labels": {"0": "background", "1": "left atrium"},
        "numTraining": len(ids),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
    }, indent=1) + "\n")
    (dst / "splits.json").write_text(json.dumps({
        "note": "demo split (order of the release's train.list): train = first 3, of which labeled_1 / labeled_2 "
                "are labeled and the rest the unlabeled pool; val = the 4th, held out",
        "train": ids[:3], "labeled_1": ids[:1], "labeled_2": ids[:2], "val": ids[3:],
    }, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
