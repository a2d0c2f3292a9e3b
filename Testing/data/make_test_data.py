"""Rebuild the tiny real test files in Testing/data from ../shared/data (processing documented in README.md).

Run from the repository root:  python Testing/data/make_test_data.py [SHARED_DATA_DIR]
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """One CT-like int16 DICOM file per slice with the geometry tags a series reader needs."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.20261122.1"
    study_uid = "1.2.826.0.1.3680043.2.1125.1.20261122.2"
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        slc = image[:, :, k]
        pos = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0008|0008": "DERIVED\\SECONDARY",
            "0010|0010": "Hippocampus^Sample",
            "0010|0020": "hippocampus_033",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0011": "1",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in pos),
            "0020|0037": "\\".join(f"{d:.6f}" for d in (direction[0], direction[3], direction[6],
                                                         direction[1], direction[4], direction[7])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|103e": "hippocampus_033 slices 13-24 (MSD Task04, CC-BY-SA 4.0)",
            "0008|0031": time.strftime("%H%M%S"),
        }
        for key, value in tags.items():
            slc.SetMetaData(key, value)
        slc.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slc)


def main(shared: Path) -> None:
    hip = shared / "Task04_Hippocampus"
    # 1. a NIfTI pair as released: float32 image and float32 label (whole numbers 0/1/2)
    shutil.copyfile(hip / "imagesTr" / "hippocampus_003.nii.gz", HERE / "hippocampus_003_image.nii.gz")
    shutil.copyfile(hip / "labelsTr" / "hippocampus_003.nii.gz", HERE / "hippocampus_003_label.nii.gz")
    # 2. a uint8 image (as released) converted to NRRD, plus its uint8 label as NRRD
    img33 = sitk.ReadImage(str(hip / "imagesTr" / "hippocampus_033.nii.gz"))
    lab33 = sitk.ReadImage(str(hip / "labelsTr" / "hippocampus_033.nii.gz"))
    sitk.WriteImage(img33, str(HERE / "hippocampus_033_image.nrrd"), True)
    sitk.WriteImage(lab33, str(HERE / "hippocampus_033_label.nrrd"), True)
    # 3. a DICOM series: slices 13..24 (z) of hippocampus_033 cast to int16 (lossless: the image is uint8)
    crop = sitk.Cast(img33[:, :, 13:25], sitk.sitkInt16)
    sitk.WriteImage(crop, str(HERE / "hippocampus_033_z13-24.nii.gz"), True)  # reference for the DICOM reader
    if (HERE / "dicom_hippocampus_033").exists():
        shutil.rmtree(HERE / "dicom_hippocampus_033")
    write_dicom_series(crop, HERE / "dicom_hippocampus_033")
    # 4. LA h5 format: a 40 x 36 x 16 (x, y, z) crop of a release file, axes x,y,z as in the release
    cid = "5FKQL4K14KCB72Y8YMC2"
    with h5py.File(shared / "LA" / "h5" / cid / "mri_norm2.h5", "r") as f:
        image = f["image"][30:70, 50:86, 40:56]
        label = f["label"][30:70, 50:86, 40:56]
    (HERE / "la_crop").mkdir(exist_ok=True)
    with h5py.File(HERE / "la_crop" / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        f.create_dataset("label", data=label, compression="gzip")
    print("label voxels in LA crop:", int(np.count_nonzero(label)), "of", label.size)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
