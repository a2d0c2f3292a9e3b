"""A corpus of bad inputs, made from the real bundled scans, for the reliability tests of every entry point.

:func:`build_corpus` writes each bad input into a folder (``tmp_path``) and returns :class:`Entry` objects: a name,
the kind of input (which entry points take it), the path to hand over, the files it consists of (hashed before and
after a run: no input may change) and what the refusal must say (a substring of the one-line error, compared
case-insensitively). ``expect=None`` marks an input that is odd but valid (a scan smaller than the patch, an
all-background label for evaluation): it must then be *handled*, i.e. give a correct result, not a crash.

Sources (real data, nothing synthetic): the hippocampus and LA scans of ``semisupseg/sample_data/`` (NIfTI), and
from ``Testing/data/``: the DICOM series of hippocampus_033 and the LA release crop ``la_crop/mri_norm2.h5``. NRRD and
MHA files are the sample scan written by SimpleITK (same voxels and geometry) and then damaged.

Kinds (what the tests feed them to):

* ``image``: one image file or DICOM folder (``segment``, the Slicer loader, and as an image inside a dataset for
  ``check-data``/``train``);
* ``label``: a label map next to a good image (``image_path``): ``evaluate`` (as the reference) and, inside a
  dataset, ``check-data``/``train``;
* ``dataset``: a whole dataset folder (imagesTr/labelsTr) with a problem only a dataset can have;
* ``model``: a damaged model file (``info``, ``segment --model``, ``import-checkpoint``).

Outputs that exist, unwritable outputs and a full disk are not files one can generate; the tests build them per
entry point (see ``test_inputs_outputs.py``).
"""
from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's notes on metadata it drops while writing MHA

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "src" / "semisupseg" / "sample_data"
TEST_DATA = REPO / "Testing" / "data"
HIPPO = SAMPLE / "hippocampus"
#: the real scan (float32, 36 x 48 x 40, 1 mm, direction diag(-1,-1,1)) most entries are made from, and its label
SCAN = HIPPO / "imagesTr" / "hippocampus_008.nii.gz"
SCAN_LABEL = HIPPO / "labelsTr" / "hippocampus_008.nii.gz"
DICOM = TEST_DATA / "dicom_hippocampus_033"
H5 = TEST_DATA / "la_crop" / "mri_norm2.h5"
MODEL = REPO / "src" / "semisupseg" / "models" / "hippocampus.pt"

KINDS = ("image", "label", "dataset", "model")


@dataclass
class Entry:
    """One bad input. ``path``: what is given to the entry point; ``files``: every file it consists of (hashed);
    ``expect``: substring of the refusal (``None``: valid, must be handled); ``image_path``: for ``label`` entries
    the matching good image; ``fmt``: the file format (for the tables)."""

    name: str
    kind: str
    path: Path
    expect: Optional[str]
    fmt: str
    files: List[Path] = field(default_factory=list)
    image_path: Optional[Path] = None
    what: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if not self.files:
            self.files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() \
                else [self.path]

    def hashes(self) -> Dict[str, str]:
        """SHA-256 of every file of the entry (and of the label's image), to check an input is never changed."""
        files = list(self.files) + ([self.image_path] if self.image_path is not None else [])
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    def matches(self, message: str) -> bool:
        return self.expect is not None and self.expect.lower() in message.lower()


# ---------------------------------------------------------------------------------------------------------------
# byte-level damage
# ---------------------------------------------------------------------------------------------------------------
def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def flip_bytes(src: Path, dst: Path, start: int, count: int = 16, seed: int = 0) -> Path:
    """Copy ``src`` with ``count`` bytes from ``start`` on XOR-ed with random non-zero values (seeded)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for i in range(start, min(start + count, len(data))):
        data[i] ^= int(rng.integers(1, 256))
    dst.write_bytes(bytes(data))
    return dst


def _header_end(data: bytes) -> int:
    """Offset of the first byte after a MetaImage/NRRD text header (``ElementDataFile = LOCAL`` / blank line)."""
    m = re.search(rb"ElementDataFile = LOCAL\r?\n", data)
    if m:
        return m.end()
    m = re.search(rb"\n\r?\n", data)
    return m.end() if m else 0


def edit_header(src: Path, dst: Path, key: str, value: str) -> Path:
    """Copy a MetaImage (``.mha``) or NRRD file with the header line ``key`` set to ``value`` (added if absent)."""
    data = src.read_bytes()
    end = _header_end(data)
    head, body = data[:end].decode("latin-1"), data[end:]
    sep = " = " if src.suffix == ".mha" else ": "
    lines = head.splitlines()
    found = False
    for i, line in enumerate(lines):
        if line.split(sep.strip(), 1)[0].strip() == key:
            lines[i] = f"{key}{sep}{value}"
            found = True
    if not found:
        lines.insert(1 if sep == ": " else 0, f"{key}{sep}{value}")
    if sep == ": ":  # NRRD: the blank line ends the header
        while lines and lines[-1] == "":
            lines.pop()
        text = "\n".join(lines) + "\n\n"
    else:
        text = "\n".join(lines) + "\n"
    dst.write_bytes(text.encode("latin-1") + body)
    return dst


def nifti_set(src: Path, dst: Path, offset: int, fmt: str, value) -> Path:
    """Copy a (gzip) NIfTI-1 file with the header field at ``offset`` (struct ``fmt``, little endian) set."""
    opener = gzip.open if src.name.endswith(".gz") else open
    with opener(src, "rb") as fh:  # type: ignore[operator]
        data = bytearray(fh.read())
    struct.pack_into("<" + fmt, data, offset, *(value if isinstance(value, tuple) else (value,)))
    if dst.name.endswith(".gz"):
        dst.write_bytes(gzip.compress(bytes(data), 6))
    else:
        dst.write_bytes(bytes(data))
    return dst


# ---------------------------------------------------------------------------------------------------------------
# image-level variants (written with SimpleITK from the real scan)
# ---------------------------------------------------------------------------------------------------------------
def _scan() -> sitk.Image:
    return sitk.ReadImage(str(SCAN))


def _write(image: sitk.Image, path: Path, compress: bool = True) -> Path:
    sitk.WriteImage(image, str(path), compress)
    return path


def _with_array(array: np.ndarray, like: sitk.Image, vector: bool = False) -> sitk.Image:
    out = sitk.GetImageFromArray(array, isVector=vector)
    if out.GetDimension() == like.GetDimension():
        out.CopyInformation(like)
    return out


def _huge_h5(path: Path) -> Path:
    """An LA-format .h5 whose ``image`` dataset declares 20000^3 float32 voxels: chunked and never written, so the
    file is a few KB (what a damaged or hostile header looks like to the reader)."""
    import h5py

    with h5py.File(str(path), "w") as f:
        f.create_dataset("image", shape=(20000, 20000, 20000), dtype="f4", chunks=(16, 16, 16), compression="gzip")
    return path


def _dicom_copy(dst: Path) -> Path:
    shutil.copytree(DICOM, dst)
    return dst


def _dicom_second_series(folder: Path) -> None:
    """Add to ``folder`` a copy of the DICOM series with another SeriesInstanceUID and other SOPInstanceUIDs (the
    UIDs' last digit changed in place: same lengths, the files stay valid)."""
    for src in sorted(DICOM.glob("*.dcm")):
        data = bytearray(src.read_bytes())
        for tag in (b"\x20\x00\x0e\x00", b"\x08\x00\x18\x00"):  # SeriesInstanceUID, SOPInstanceUID
            at = data.find(tag, 132)
            if at < 0:
                raise RuntimeError(f"{src}: no {tag!r} element")
            if data[at + 4: at + 6] == b"UI":  # explicit VR: 2-byte length
                length = struct.unpack_from("<H", data, at + 6)[0]
            else:  # implicit VR: 4-byte length
                length = struct.unpack_from("<I", data, at + 4)[0]
            value = data[at + 8: at + 8 + length].rstrip(b"\x00 ")
            data[at + 8 + len(value) - 1] = ord("7")
        (folder / f"b_{src.name}").write_bytes(bytes(data))


def build_corpus(root: Path) -> List[Entry]:
    """Write every bad input under ``root`` (created) and return the entries (see the module doc)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scan = _scan()
    arr = sitk.GetArrayFromImage(scan)  # z, y, x float32
    lab_img = sitk.ReadImage(str(SCAN_LABEL))
    lab = sitk.GetArrayFromImage(lab_img)
    entries: List[Entry] = []

    def d(name: str) -> Path:
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def add(name, kind, path, expect, fmt, what, **kw) -> None:
        entries.append(Entry(name, kind, Path(path), expect, fmt, what=what, **kw))

    base = d("_base")  # good files in other formats, damaged copies go elsewhere
    nrrd = _write(scan, base / "scan.nrrd")
    nrrd_raw = _write(scan, base / "scan_raw.nrrd", compress=False)
    mha = _write(scan, base / "scan.mha")
    mha_raw = _write(scan, base / "scan_raw.mha", compress=False)
    nii = _write(scan, base / "scan.nii", compress=False)

    # ---- truncated and bit-flipped files, every format ------------------------------------------------------
    img = d("images")
    add("nifti_gz_truncated", "image", truncate(SCAN, img / "trunc.nii.gz"), "truncated", "nii.gz",
        "gzip NIfTI cut at half")
    add("nifti_truncated", "image", truncate(nii, img / "trunc.nii", 0.7), "truncated", "nii",
        "NIfTI cut in the voxel data")
    add("nifti_header_truncated", "image", truncate(nii, img / "trunc_header.nii", 200 / nii.stat().st_size),
        "truncated", "nii", "NIfTI cut inside its header")
    add("nifti_gz_bitflip", "image", flip_bytes(SCAN, img / "flip.nii.gz", SCAN.stat().st_size // 2), "corrupt",
        "nii.gz", "16 bytes flipped in the gzip stream")
    add("nifti_datatype_garbage", "image", nifti_set(nii, img / "bad_datatype.nii", 70, "h", 1234), "cannot read",
        "nii", "NIfTI datatype code 1234")
    add("nrrd_truncated", "image", truncate(nrrd, img / "trunc.nrrd"), "cannot read", "nrrd",
        "gzip NRRD cut at half")
    add("nrrd_raw_truncated", "image", truncate(nrrd_raw, img / "trunc_raw.nrrd", 0.6), "cannot read", "nrrd",
        "raw NRRD cut in the voxel data")
    add("nrrd_bitflip", "image", flip_bytes(nrrd, img / "flip.nrrd", _header_end(nrrd.read_bytes()) + 200),
        "cannot read", "nrrd", "16 bytes flipped in the gzip data")
    add("nrrd_header_garbage", "image", flip_bytes(nrrd, img / "flip_header.nrrd", 0, 12), "cannot read", "nrrd",
        "magic line of the NRRD header flipped")
    add("mha_truncated", "image", truncate(mha, img / "trunc.mha"), "truncated", "mha",
        "compressed MetaImage cut at half")
    add("mha_raw_truncated", "image", truncate(mha_raw, img / "trunc_raw.mha", 0.6), "truncated", "mha",
        "raw MetaImage cut in the voxel data")
    add("mha_bitflip", "image", flip_bytes(mha, img / "flip.mha", _header_end(mha.read_bytes()) + 100),
        "cannot read", "mha", "16 bytes flipped in the zlib data")
    add("h5_truncated", "image", truncate(H5, img / "trunc.h5"), "HDF5", "h5", "LA .h5 cut at half")
    add("h5_bitflip_superblock", "image", flip_bytes(H5, img / "flip_super.h5", 0, 8), "HDF5", "h5",
        "HDF5 signature flipped")
    add("h5_bitflip_data", "image", flip_bytes(H5, img / "flip_data.h5", H5.stat().st_size // 2, 64), "HDF5",
        "h5", "64 bytes flipped in the gzip chunks")
    empty = img / "empty.nii.gz"
    empty.write_bytes(b"")
    add("empty_file", "image", empty, "empty file", "nii.gz", "0 bytes")
    text = img / "notes.nrrd"
    text.write_text("these are not voxels\n")
    add("text_as_image", "image", text, "cannot read", "nrrd", "a text file named .nrrd")

    dcm = _dicom_copy(img / "dicom_truncated")
    truncate(dcm / "slice_005.dcm", dcm / "slice_005.dcm", 0.5)
    add("dicom_slice_truncated", "image", dcm, "DICOM", "dicom", "one slice of 12 cut at half")
    dcm = _dicom_copy(img / "dicom_bitflip")
    flip_bytes(dcm / "slice_004.dcm", dcm / "slice_004.dcm", 128, 4)
    add("dicom_slice_bitflip", "image", dcm, "DICOM", "dicom", "DICM magic of one slice flipped")
    dcm = _dicom_copy(img / "dicom_two_series")
    _dicom_second_series(dcm)
    add("dicom_two_series", "image", dcm, "2 DICOM series", "dicom", "a folder holding two series")
    dcm = d("images/dicom_one_slice")
    shutil.copy(DICOM / "slice_000.dcm", dcm / "slice_000.dcm")
    add("dicom_one_slice", "image", dcm, "single slice", "dicom", "a series of one slice")
    dcm = d("images/dicom_none")
    (dcm / "readme.txt").write_text("no DICOM here\n")
    add("dicom_empty_folder", "image", dcm, "no DICOM series", "dicom", "a folder without DICOM files")

    # ---- wrong headers --------------------------------------------------------------------------------------
    hdr = d("headers")
    add("mha_negative_spacing", "image", edit_header(mha, hdr / "neg_spacing.mha", "ElementSpacing", "-1 1 1"),
        "spacing", "mha", "ElementSpacing -1 1 1")
    add("mha_zero_spacing", "image", edit_header(mha, hdr / "zero_spacing.mha", "ElementSpacing", "1 0 1"),
        "spacing", "mha", "ElementSpacing 1 0 1")
    add("nrrd_zero_spacing", "image",
        edit_header(nrrd, hdr / "zero_spacing.nrrd", "space directions", "(0,0,0) (0,-1,0) (0,0,1)"),
        "spacing", "nrrd", "a zero space direction vector")
    add("nifti_zero_pixdim", "image", nifti_set(SCAN, hdr / "zero_pixdim.nii.gz", 80, "f", 0.0), "spacing",
        "nii.gz", "pixdim[1] = 0 (and qform/sform off)")
    add("nifti_negative_pixdim", "image",
        nifti_set(nifti_set(SCAN, hdr / "neg_pixdim.nii.gz", 80, "f", -2.0), hdr / "neg_pixdim.nii.gz", 252, "hh",
                  (0, 0)), "spacing", "nii.gz", "pixdim[1] = -2 with no qform/sform")
    add("mha_nan_direction", "image",
        edit_header(mha, hdr / "nan_direction.mha", "TransformMatrix", "nan 0 0 0 1 0 0 0 1"), "direction", "mha",
        "NaN in the direction matrix")
    add("mha_singular_direction", "image",
        edit_header(mha, hdr / "singular_direction.mha", "TransformMatrix", "1 0 0 1 0 0 0 0 1"), "direction",
        "mha", "two equal direction columns (singular matrix)")
    add("nrrd_singular_direction", "image",
        edit_header(nrrd, hdr / "singular_direction.nrrd", "space directions", "(1,0,0) (2,0,0) (0,0,1)"),
        "direction", "nrrd", "parallel space directions")
    add("mha_nan_origin", "image", edit_header(mha, hdr / "nan_origin.mha", "Offset", "nan 0 0"), "origin", "mha",
        "NaN origin")
    add("mha_huge_size", "image", edit_header(mha, hdr / "huge.mha", "DimSize", "100000 100000 100000"),
        "memory", "mha", "header claims 10^15 voxels (compressed data)")
    add("nrrd_huge_size", "image", edit_header(nrrd, hdr / "huge.nrrd", "sizes", "40000 40000 20000"), "memory",
        "nrrd", "header claims 3.2e13 voxels (gzip data)")
    add("nifti_huge_size", "image", nifti_set(SCAN, hdr / "huge.nii.gz", 40, "8h", (3, 30000, 30000, 30000, 1, 1,
                                                                                    1, 1)),
        "memory", "nii.gz", "dim[] claims 2.7e13 voxels")
    add("mha_ndims_negative", "image", edit_header(mha, hdr / "ndims.mha", "NDims", "-1"), "dimensions", "mha",
        "NDims = -1 (crashed ITK: SIGSEGV; found by the fuzz)")
    add("nifti_bitpix_mismatch", "image", nifti_set(nii, hdr / "bitpix.nii", 72, "h", 255), "bitpix", "nii",
        "bitpix 255 for float32 data (ValueError in the NaN scan; found by the fuzz)")
    add("nifti_nan_vox_offset", "image", nifti_set(nii, hdr / "vox_offset.nii", 108, "f", float("nan")),
        "vox_offset", "nii", "vox_offset NaN (ValueError; found by the fuzz)")
    add("h5_huge_dataset", "image", _huge_h5(hdr / "huge.h5"), "memory", "h5",
        "an 'image' dataset declared 20000^3 (chunked, never written: a tiny file)")
    add("mha_zero_size", "image", edit_header(mha_raw, hdr / "zero_size.mha", "DimSize", "36 0 40"), "empty",
        "mha", "DimSize with a 0")
    add("nrrd_zero_size", "image", edit_header(nrrd_raw, hdr / "zero_size.nrrd", "sizes", "36 48 0"), "empty",
        "nrrd", "sizes with a 0")
    add("nifti_zero_size", "image", nifti_set(nii, hdr / "zero_size.nii", 40, "4h", (3, 36, 0, 40)), "empty",
        "nii", "dim[2] = 0")

    # ---- wrong shapes and values (valid files) --------------------------------------------------------------
    val = d("values")
    add("image_2d", "image", _write(sitk.GetImageFromArray(arr[20]), val / "slice2d.nii.gz"), "2D", "nii.gz",
        "one axial slice as a 2D image")
    four = sitk.JoinSeries([scan, scan, scan])
    add("image_4d", "image", _write(four, val / "series4d.nii.gz"), "4D", "nii.gz", "three time points")
    add("image_vector", "image", _write(_with_array(np.stack([arr] * 3, -1), scan, vector=True),
                                        val / "rgb.nrrd"), "multi-component", "nrrd", "3 components per voxel")
    add("image_single_slice", "image", _write(scan[:, :, 10:11], val / "one_slice.nii.gz"), "single slice",
        "nii.gz", "a 3D image of one slice")
    nan = arr.copy()
    nan[10:12, 20:22, 15:17] = np.nan
    add("image_nan_nifti", "image", _write(_with_array(nan, scan), val / "nan.nii.gz"), "non-finite", "nii.gz",
        "8 NaN voxels")
    inf = arr.copy()
    inf[5, 5, 5] = np.inf
    add("image_inf_nrrd", "image", _write(_with_array(inf, scan), val / "inf.nrrd"), "non-finite", "nrrd",
        "one +Inf voxel")
    add("image_nan_mha", "image", _write(_with_array(nan, scan), val / "nan.mha"), "non-finite", "mha",
        "8 NaN voxels")
    add("image_constant", "image", _write(_with_array(np.full_like(arr, 312.0), scan), val / "constant.nii.gz"),
        "constant", "nii.gz", "every voxel 312")
    add("image_zeros", "image", _write(_with_array(np.zeros_like(arr), scan), val / "zeros.nrrd"), "constant",
        "nrrd", "every voxel 0")
    add("image_smaller_than_patch", "image", _write(scan[10:18, 12:20, 8:14], val / "tiny.nii.gz"), None,
        "nii.gz", "8 x 8 x 6 voxels, far below any patch: padded, segmented")

    # ---- labels ---------------------------------------------------------------------------------------------
    lbl = d("labels")

    def label_entry(name, image, expect, what, fmt="nii.gz", suffix=".nii.gz"):
        path = lbl / f"{name}{suffix}"
        _write(image, path)
        add(name, "label", path, expect, fmt, what, image_path=SCAN)

    moved = sitk.Image(lab_img)
    moved.SetSpacing((1.0, 1.0, 1.5))
    label_entry("label_other_spacing", moved, "spacing", "spacing 1 x 1 x 1.5 mm instead of 1 mm")
    shifted = sitk.Image(lab_img)
    shifted.SetOrigin(tuple(o + 5.0 for o in lab_img.GetOrigin()))
    label_entry("label_other_origin", shifted, "origin", "origin moved by 5 mm")
    turned = sitk.Image(lab_img)
    turned.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    label_entry("label_other_direction", turned, "direction", "identity direction instead of diag(-1,-1,1)")
    label_entry("label_other_size", lab_img[:, :, 2:], "size", "two slices fewer")
    frac = lab.astype(np.float32)
    frac[frac > 0] = 0.5
    label_entry("label_non_integer", _with_array(frac, lab_img), "non-integer", "a probability-like map (0.5)")
    out = lab.copy()
    out[lab == 2] = 7
    label_entry("label_out_of_range", _with_array(out, lab_img), "outside", "value 7 for classes 0, 1, 2")
    neg = lab.astype(np.int16)
    neg[lab == 1] = -1
    label_entry("label_negative", _with_array(neg, lab_img), "outside", "value -1")
    nanl = lab.astype(np.float32)
    nanl[0, 0, :4] = np.nan
    label_entry("label_nan", _with_array(nanl, lab_img), "non-finite", "NaN in a label map", "nrrd", ".nrrd")
    label_entry("label_all_background", _with_array(np.zeros_like(lab), lab_img), None,
                "no foreground voxel (valid: Dice 0, distances undefined; training warns)")
    label_entry("label_truncated_src", lab_img, "truncated", "label cut at half")
    truncate(lbl / "label_truncated_src.nii.gz", lbl / "label_truncated_src.nii.gz", 0.5)

    # ---- datasets -------------------------------------------------------------------------------------------
    ds = root / "datasets"
    dup = _small_dataset(ds / "duplicate_case")
    _write(scan, dup / "imagesTr" / "hippocampus_008.nrrd")
    add("dataset_duplicate_case", "dataset", dup, "second file for case", "dataset",
        "hippocampus_008 as .nii.gz and .nrrd")
    orphan = _small_dataset(ds / "orphan_label")
    (orphan / "imagesTr" / "hippocampus_011.nii.gz").unlink()
    add("dataset_orphan_label", "dataset", orphan, "without an image", "dataset", "a label without its image")
    nojson = _small_dataset(ds / "bad_dataset_json")
    (nojson / "dataset.json").write_text("{\"labels\": [1, 2")
    add("dataset_bad_json", "dataset", nojson, "dataset JSON", "dataset", "dataset.json cut short")
    empty_ds = ds / "empty"
    (empty_ds / "imagesTr").mkdir(parents=True)
    (empty_ds / "labelsTr").mkdir()
    add("dataset_empty", "dataset", empty_ds, "no readable images", "dataset", "imagesTr/ and labelsTr/ empty")

    # ---- model files ----------------------------------------------------------------------------------------
    mdl = d("models")
    add("model_truncated", "model", truncate(MODEL, mdl / "trunc.pt"), "checkpoint", "pt", "model cut at half")
    add("model_bitflip", "model", flip_bytes(MODEL, mdl / "flip.pt", MODEL.stat().st_size // 2, 64), "model file",
        "pt", "64 bytes flipped in the tensor data")
    add("model_zip_dir_flip", "model", flip_bytes(MODEL, mdl / "flip_dir.pt", MODEL.stat().st_size - 60, 20),
        "model file", "pt", "zip central directory flipped")
    add("model_is_nifti", "model", shutil.copy(SCAN, mdl / "scan.pt") and mdl / "scan.pt", "checkpoint", "pt",
        "a NIfTI scan named .pt")
    empty_model = mdl / "empty.pt"
    empty_model.write_bytes(b"")
    add("model_empty", "model", empty_model, "not a model file", "pt", "0 bytes")
    return entries


def _small_dataset(folder: Path, cases: Sequence[str] = ("hippocampus_008", "hippocampus_011")) -> Path:
    """A copy of two hippocampus cases (imagesTr, labelsTr, dataset.json): the frame a bad file is put into."""
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for case in cases:
            shutil.copy(HIPPO / sub / f"{case}.nii.gz", folder / sub / f"{case}.nii.gz")
    shutil.copy(HIPPO / "dataset.json", folder / "dataset.json")
    return folder


def dataset_with(folder: Path, entry: Entry) -> Path:
    """A small real dataset (two cases) in which one case is ``entry``'s bad image (kind ``image``, as a third
    case) or bad label (kind ``label``, replacing hippocampus_008's label). Returns the dataset folder."""
    _small_dataset(folder)
    if entry.kind == "image":
        name = "badcase"
        src = entry.path
        if src.is_dir():
            raise ValueError("a DICOM folder is not a dataset case")
        suffix = ".nii.gz" if src.name.endswith(".nii.gz") else src.suffix
        shutil.copy(src, folder / "imagesTr" / f"{name}{suffix}")
        shutil.copy(SCAN_LABEL, folder / "labelsTr" / f"{name}.nii.gz")
    elif entry.kind == "label":
        (folder / "labelsTr" / "hippocampus_008.nii.gz").unlink()
        suffix = ".nii.gz" if entry.path.name.endswith(".nii.gz") else entry.path.suffix
        shutil.copy(entry.path, folder / "labelsTr" / f"hippocampus_008{suffix}")
    else:
        raise ValueError(f"{entry.kind} entries are no dataset case")
    return folder


def by_kind(entries: Sequence[Entry], kind: str, where: Optional[Callable[[Entry], bool]] = None) -> List[Entry]:
    return [e for e in entries if e.kind == kind and (where is None or where(e))]


__all__ = ["Entry", "build_corpus", "dataset_with", "by_kind", "truncate", "flip_bytes", "edit_header",
           "nifti_set", "SCAN", "SCAN_LABEL", "DICOM", "H5", "MODEL", "HIPPO"]
