"""Reading and writing volumes: NIfTI, NRRD, MHA/MHD, DICOM series folders (SimpleITK) and the LA ``mri_norm2.h5``.

Everything read comes back as a :class:`~semisupseg.volume.Volume`: ``array`` in **z, y, x** order, ``spacing`` and
``origin`` in **x, y, z** millimetres (ITK/LPS), ``direction`` a 3x3 cosine matrix whose column ``i`` is the
physical direction of index axis ``i`` (x, y, z).

Validation (every problem raises :class:`~semisupseg.errors.InputError` naming the file):

* unreadable / corrupt / missing files, unsupported suffixes;
* not a 3D scalar volume: 2D images, a single slice, 4D images with more than one component along the 4th axis
  (a 4D image with exactly one component is squeezed to 3D), multi-component (vector / RGB) pixels unless
  ``allow_channels=True``;
* empty images (a zero-size axis);
* NaN/Inf voxels: an error by default (``nonfinite="error"``); ``nonfinite="zero"`` replaces them by 0 instead
  (documented opt-in, used e.g. for probability maps written by other tools). NIfTI files are scanned by the
  package itself, because ITK's NIfTI reader silently turns NaN into 0 (and silently accepts a truncated file:
  both are detected here, at the cost of decompressing a ``.nii.gz`` once more, about +50 % read time);
* labels (:func:`read_label`): geometry different from its image, float values that are not whole numbers, values
  outside the declared classes. Labels come back as integers (``uint8`` when the values fit, else ``int16``/
  ``int32``); float-typed label files with whole-number values (some Task04_Hippocampus files) are accepted.

Writing (:func:`write_volume`) keeps exactly the geometry of the Volume, chooses the format by suffix
(``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``, ``.mhd``; ``.nhdr`` is read but not written),
refuses to replace an existing file unless ``overwrite=True`` (:class:`~semisupseg.errors.OutputExistsError`) and
writes atomically: a temporary file in the destination folder, then :func:`os.replace`, so a crash never leaves a
half-written output under the final name.
"""
from __future__ import annotations

import contextlib
import locale
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from semisupseg.fileio import FILE_MODE, replace_file, temp_beside, write_text_atomic
from semisupseg.errors import InputError, OutputExistsError
from semisupseg.volume import Volume

__all__ = [
    "Volume",
    "IMAGE_SUFFIXES",
    "WRITE_SUFFIXES",
    "LA_H5_SPACING",
    "volume_suffix",
    "header_information",
    "strip_suffix",
    "is_volume_file",
    "read_volume",
    "read_image",
    "read_label",
    "read_la_h5",
    "read_image_or_h5",
    "read_label_or_h5",
    "check_finite",
    "check_not_constant",
    "check_scan",
    "check_header",
    "check_memory",
    "available_memory",
    "SeriesChoiceError",
    "itk_messages",
    "check_label_geometry",
    "check_label_values",
    "label_array",
    "to_sitk",
    "from_sitk",
    "write_volume",
    "write_segmentation",
    "list_volume_files",
    "describe",
]

PathLike = Union[str, Path]

#: suffixes :func:`read_volume` accepts (lower case; ``.nii.gz`` etc. are matched as a whole)
IMAGE_SUFFIXES: Tuple[str, ...] = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".h5", ".hdf5")
#: suffixes :func:`write_volume` can write
WRITE_SUFFIXES: Tuple[str, ...] = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")
#: voxel size of the LA ``mri_norm2.h5`` release (x, y, z mm): the files store none, the LGE-MRI scans are 0.625 mm
LA_H5_SPACING: Tuple[float, float, float] = (0.625, 0.625, 0.625)

NonFinite = str  # "error" | "zero"


# ---------------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------------
def volume_suffix(path: PathLike) -> str:
    """The recognised (lower-case) suffix of ``path`` (``".nii.gz"``, ``".nrrd"``...), or ``""`` if none."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def strip_suffix(path: PathLike) -> str:
    """The file name without its volume suffix (``"case_001.nii.gz"`` → ``"case_001"``)."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


def is_volume_file(path: PathLike) -> bool:
    """Whether ``path`` is a regular, non-hidden file with a readable volume suffix."""
    p = Path(path)
    return p.is_file() and not p.name.startswith(".") and volume_suffix(p) != ""


# ---------------------------------------------------------------------------------------------------------------
# SimpleITK <-> Volume
# ---------------------------------------------------------------------------------------------------------------
def from_sitk(image: sitk.Image, path: Optional[PathLike] = None, allow_channels: bool = False) -> Volume:
    """A :class:`Volume` from a 3D SimpleITK image (4D with one component along t is squeezed).

    ``allow_channels``: accept multi-component pixels and return them as ``(C, Z, Y, X)``.
    Raises :class:`InputError` (naming ``path``) for anything that is not a 3D volume.
    """
    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if any(s == 0 for s in size):
        raise InputError(f"empty image (size {size}, x,y,z...): no voxels", path)
    if dim == 2:
        raise InputError(f"2D image (size {size}); a 3D volume is required", path)
    if dim == 4:
        if size[3] != 1:
            raise InputError(
                f"4D image with {size[3]} components along the 4th axis (size {size}); only 3D volumes (or 4D "
                "with a single component) are supported: split the channels into separate 3D files",
                path,
            )
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize([size[0], size[1], size[2], 0])
        extractor.SetIndex([0, 0, 0, 0])
        image = extractor.Execute(image)
        dim = 3
        size = tuple(image.GetSize())
    if dim != 3:
        raise InputError(f"{dim}D image (size {size}); a 3D volume is required", path)
    if size[2] == 1:
        raise InputError(f"a single slice (size {size}, x,y,z): a 2D image; a 3D volume is required", path)
    ncomp = image.GetNumberOfComponentsPerPixel()
    if ncomp > 1 and not allow_channels:
        raise InputError(
            f"multi-component pixels ({ncomp} components per voxel, e.g. RGB or a vector image); a scalar 3D "
            "volume is required",
            path,
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x) or (z, y, x, c)
    if array.ndim == 4:
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    _check_geometry_values(Path(path) if path is not None else None, image.GetSpacing(), image.GetOrigin(),
                           direction.reshape(-1), None)
    return Volume(array, image.GetSpacing(), image.GetOrigin(), direction, None if path is None else str(path))


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with exactly ``volume``'s geometry; a ``(C, Z, Y, X)`` array becomes a vector image."""
    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64 or array.dtype == np.uint64:
        array = _smallest_int(array)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.ndim == 4:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in np.asarray(volume.direction, dtype=np.float64).reshape(-1)])
    return image


def _smallest_int(array: np.ndarray) -> np.ndarray:
    """``array`` (integer) in the smallest of uint8/int16/int32 that holds its values."""
    if array.size == 0:
        return array.astype(np.uint8)
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype, copy=False)
    return array.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------------
def check_finite(array: np.ndarray, path: Optional[PathLike] = None, nonfinite: NonFinite = "error") -> np.ndarray:
    """Check a floating array for NaN/Inf. ``nonfinite="error"`` raises :class:`InputError` naming the count;
    ``"zero"`` returns a copy with those voxels set to 0. Integer arrays pass unchanged."""
    if nonfinite not in ("error", "zero"):
        raise InputError(f"nonfinite must be 'error' or 'zero', got {nonfinite!r}")
    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    bad = int(array.size - np.count_nonzero(finite))
    if nonfinite == "error":
        n_nan = int(np.count_nonzero(np.isnan(array)))
        raise InputError(
            f"{bad} non-finite voxels ({n_nan} NaN, {bad - n_nan} Inf) of {array.size}; fix the file (replace "
            "NaN/inf), or read it in Python with nonfinite='zero' to replace them by 0",
            path,
        )
    out = array.copy()
    out[~finite] = 0
    return out


def check_not_constant(volume: Volume, path: Optional[PathLike] = None, what: str = "segment") -> None:
    """Refuse (:class:`InputError`) an image whose voxels all hold one value: there is nothing to ``what``
    (after intensity normalisation it would be all zeros and the network's answer meaningless)."""
    array = np.asarray(volume.array)
    if array.size and float(np.min(array)) == float(np.max(array)):
        raise InputError(f"the image is constant (every voxel is {float(array.reshape(-1)[0]):g}): nothing to {what}",
                         path if path is not None else volume.path)


def check_scan(volume: Volume, name: str, what: str = "segment") -> None:
    """The checks a scan passed from memory (a Slicer node, an array) gets before the network sees it, as files get
    them when read: a 3D volume of more than one slice, no NaN/Inf voxels, not constant. ``name`` says which input
    in the :class:`InputError` (e.g. ``"volume 'CT chest'"``); ``what``: the work refused ("segment", "learn
    from")."""
    array = np.asarray(volume.array)
    shape = array.shape[-3:]
    if array.size == 0:
        raise InputError(f"empty image (size {tuple(reversed(shape))}, x,y,z): no voxels", name)
    if shape[0] == 1:
        raise InputError(f"a single slice (size {tuple(reversed(shape))}, x,y,z): a 2D image; a 3D volume is "
                         "required", name)
    check_finite(array, name, "error")
    check_not_constant(volume, name, what)


def label_array(array: np.ndarray, path: Optional[PathLike] = None) -> np.ndarray:
    """A label array as integers: float arrays must hold whole numbers (else :class:`InputError`); the result is
    ``uint8`` when the values fit, else ``int16``/``int32``."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        check_finite(array, path, "error")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            frac = np.abs(array - rounded)
            n = int(np.count_nonzero(frac > 0))
            example = float(array.reshape(-1)[int(np.argmax(frac.reshape(-1)))])
            raise InputError(
                f"label file holds {n} non-integer values (e.g. {example!r}); a label map must contain whole class "
                "numbers (is this a probability map or an image?)",
                path,
            )
        array = rounded
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise InputError("label values out of the int32 range", path)
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label array of unsupported type {array.dtype}", path)
    return _smallest_int(array)


def check_label_values(
    array: np.ndarray,
    path: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    label_values: Optional[Sequence[int]] = None,
) -> None:
    """Raise :class:`InputError` if ``array`` holds values outside ``label_values`` (the declared file values of the
    classes) or outside ``0..num_classes-1``."""
    if num_classes is None and label_values is None:
        return
    present = np.unique(array)
    if label_values is not None:
        allowed = set(int(v) for v in label_values)
        what = f"the declared label values {sorted(allowed)}"
    else:
        allowed = set(range(int(num_classes)))  # type: ignore[arg-type]
        what = f"the {num_classes} declared classes (0..{int(num_classes) - 1})"  # type: ignore[arg-type]
    extra = [int(v) for v in present if int(v) not in allowed]
    if extra:
        counts = {v: int(np.count_nonzero(array == v)) for v in extra[:5]}
        raise InputError(
            f"label values {extra[:10]}{'...' if len(extra) > 10 else ''} are outside {what} "
            f"(voxel counts: {counts})",
            path,
        )


def _xyz(values: Sequence[float], digits: int) -> str:
    """``(1.0, 1.0, 1.5)``: rounded plain numbers for messages (numpy 2 would print ``np.float64(1.0)``)."""
    return "(" + ", ".join(repr(round(float(v), digits)) for v in values) + ")"


def check_label_geometry(label: Volume, image: Volume, path: Optional[PathLike] = None, tol: float = 1e-3) -> None:
    """Raise :class:`InputError` (naming the label file) when the label's grid is not the image's grid.

    Shape must be equal; spacing equal within ``tol`` relative; origin within ``tol`` × the smallest spacing (mm);
    direction cosines within ``tol``. The message says which property differs and both values.
    """
    path = path if path is not None else label.path
    img_name = image.path or "the image"
    if label.shape_zyx != image.shape_zyx:
        raise InputError(
            f"label size {label.size_xyz} (x,y,z) does not match image {img_name} size {image.size_xyz}", path
        )
    sp_l, sp_i = np.asarray(label.spacing), np.asarray(image.spacing)
    if not np.allclose(sp_l, sp_i, rtol=tol, atol=0):
        raise InputError(
            f"label spacing {_xyz(sp_l, 6)} mm does not match image {img_name} spacing {_xyz(sp_i, 6)} mm",
            path,
        )
    if not np.allclose(label.origin, image.origin, rtol=0, atol=tol * float(sp_i.min())):
        raise InputError(
            f"label origin {_xyz(label.origin, 4)} mm does not match image {img_name} origin "
            f"{_xyz(image.origin, 4)} mm",
            path,
        )
    if not np.allclose(label.direction, image.direction, rtol=0, atol=tol):
        raise InputError(
            f"label direction {np.round(label.direction, 4).tolist()} does not match image {img_name} direction "
            f"{np.round(image.direction, 4).tolist()}",
            path,
        )


# ---------------------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------------------
#: Windows opens files for ITK through its ANSI code page (``mbcs``): a path character outside it cannot be opened
_WINDOWS = os.name == "nt"
_ANSI_CODEC = "mbcs"


def check_itk_path(path: Path, what: str = "read") -> None:
    """Refuse, in one line naming them, the characters of ``path`` the image library (ITK) cannot open on Windows:
    it opens files with the C library's narrow functions, in the ANSI code page, so e.g. a Chinese folder name on a
    Western-European Windows is a file it cannot find ("not an image" otherwise). Nothing elsewhere, nor where
    Windows runs with UTF-8 as its code page."""
    if not _WINDOWS:
        return
    bad = "".join(sorted({c for c in str(path) if not _encodable(c)}))
    if bad:
        raise InputError(f"cannot {what} the file: its path has characters ({bad}) that Windows' ANSI code page "
                         f"lacks, which the image library (ITK) cannot open; move or rename it to a path without "
                         f"them", path)


def _encodable(char: str) -> bool:
    """Whether the ANSI code page holds ``char`` (an unknown code page refuses nothing)."""
    try:
        char.encode(_ANSI_CODEC, errors="strict")
    except UnicodeEncodeError:
        return False
    except LookupError:
        return True
    return True


def _read_sitk(path: Path, series_id: Optional[str] = None) -> sitk.Image:
    if not path.exists():
        raise InputError("file not found", path)
    check_itk_path(path)
    if path.is_dir():
        return _read_dicom_series(path, series_id)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", path)
    suffix = volume_suffix(path)
    if suffix in (".h5", ".hdf5"):
        raise InputError("an HDF5 file: read it with read_la_h5 / read_image_or_h5", path)
    _check_before_read(path)
    said: List[str] = []
    try:
        with _itk_messages() as said:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        _refuse_itk_complaints(path, said)  # ITK's own words on stderr say more than its exception
        raise InputError(_unreadable_message(path, str(exc)), path) from exc
    _refuse_itk_complaints(path, said)
    return image


# ---------------------------------------------------------------------------------------------------------------
# checks before reading: the header (geometry, sizes) and the memory the voxels need
# ---------------------------------------------------------------------------------------------------------------
#: ITK's own messages (printed on the process's stderr by its C++ readers) that mean the data read is incomplete or
#: corrupt although the reader returned an image: such a read is refused
_ITK_FAILURES: Tuple[Tuple[str, str], ...] = (
    ("Uncompress failed", "corrupt compressed voxel data"),
    ("data not read completely", "truncated voxel data"),
    ("M_ReadElementsData", "truncated or corrupt voxel data"),
)


@contextlib.contextmanager
def _itk_messages() -> Iterator[List[str]]:
    """Collect what ITK's C++ code prints on file descriptor 2 while the block runs (it writes there directly,
    bypassing Python): the messages are returned in the list (for :func:`_refuse_itk_complaints`) instead of
    reaching the user's terminal as stray lines. When the block raises, the text is dropped (the error says what went
    wrong); otherwise text that is not one of ITK's known complaints is written back to stderr, unchanged."""
    said: List[str] = []
    try:
        fd = 2
        saved = os.dup(fd)
    except OSError:  # no stderr at all (some GUI processes)
        yield said
        return
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(sink.fileno(), fd)
        failed = False
        try:
            yield said
        except BaseException:
            failed = True  # the error raised says it: ITK's lines are not shown
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            said.append(text)
            known = any(key in text for key, _ in _ITK_FAILURES) or "WARNING: In " in text
            if text.strip() and not known and not failed:
                try:
                    os.write(fd, text.encode("utf-8", "replace"))
                except OSError:
                    pass


#: public name for other modules that call SimpleITK readers directly (e.g. header-only reads)
itk_messages = _itk_messages


def _refuse_itk_complaints(path: Path, said: List[str]) -> None:
    text = "".join(said)
    for key, meaning in _ITK_FAILURES:
        if key in text:
            raise InputError(f"cannot read the file: {meaning} (corrupt or truncated file)", path)


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"  # pragma: no cover


def available_memory() -> Optional[int]:
    """Bytes this process may still allocate: the smaller of the system's available memory (``MemAvailable`` of
    ``/proc/meminfo``; the physical memory where that file is missing) and the address-space limit
    (``RLIMIT_AS``), or ``None`` when neither is known."""
    limits: List[int] = []
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE")))
        except (AttributeError, ValueError, OSError):
            pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(int(soft))
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        pass
    return min(limits) if limits else None


#: bytes per voxel of each SimpleITK pixel type name (component)
_PIXEL_BYTES = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}


def check_memory(size_xyz: Sequence[int], components: int, bytes_per_component: int,
                 path: Optional[PathLike] = None, what: str = "voxels", available: Optional[int] = None) -> int:
    """Refuse (:class:`InputError` naming ``path``) to read an image whose voxels would not fit in memory: the
    estimate counts the reader's buffer, the array copy and a float32 copy (``voxels x components x (2 x bytes +
    4)``). ``available``: bytes that may be allocated (default :func:`available_memory`). Returns the estimate."""
    nvox = 1
    for s in size_xyz:
        nvox *= max(int(s), 0)
    per_voxel = max(int(components), 1) * (2 * int(bytes_per_component) + 4)
    needed = nvox * per_voxel
    limit = available_memory() if available is None else available
    if limit is not None and needed > limit:
        dims = " x ".join(str(int(s)) for s in size_xyz)
        comp = f" with {components} components" if components > 1 else ""
        raise InputError(
            f"the header declares {dims} {what}{comp} ({bytes_per_component}-byte values): reading it needs about "
            f"{_fmt_bytes(needed)} of memory, more than the {_fmt_bytes(limit)} available; refused before reading "
            "(a damaged header, or crop/resample the scan first)",
            path,
        )
    return needed


def _text_header(path: Path) -> Optional[Dict[str, str]]:
    """``{key: value}`` of a MetaImage (``.mha``/``.mhd``) or NRRD (``.nrrd``/``.nhdr``) text header, or ``None``
    for other formats or when the first bytes are not such a header (the reader then decides)."""
    suffix = volume_suffix(path)
    if suffix not in (".mha", ".mhd", ".nrrd", ".seg.nrrd", ".nhdr"):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    out: Dict[str, str] = {}
    if suffix in (".nrrd", ".seg.nrrd", ".nhdr"):
        if not head.startswith(b"NRRD"):
            return None
        for raw in head.split(b"\n")[1:]:
            line = raw.decode("latin-1").rstrip("\r")
            if not line.strip():
                break
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.lstrip("=").strip()
        return out
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").rstrip("\r")
        if "=" not in line:
            if line.strip():
                return out if out else None
            continue
        key, _, value = line.partition("=")
        out[key.strip().lower()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    return out if "ndims" in out or "dimsize" in out else None


def _numbers(text: str) -> List[float]:
    """The numbers of a header value (``"(1,0,0) (0,1,0)"``, ``"1 1 2.5"``); ``nan``/``inf`` kept, ``none``
    skipped; a word that is no number gives NaN (so that it is refused, never silently read as 0)."""
    values: List[float] = []
    for token in re.split(r"[\s,()]+", text.strip()):
        if not token or token.lower() == "none":
            continue
        try:
            values.append(float(token))
        except ValueError:
            values.append(float("nan"))
    return values


def _check_geometry_values(path: Path, spacing: Optional[Sequence[float]], origin: Optional[Sequence[float]],
                           direction: Optional[Sequence[float]], size: Optional[Sequence[float]]) -> None:
    """Refuse a header whose size, spacing, origin or direction cannot describe a 3D grid (:class:`InputError`)."""
    if size is not None:
        if any(not np.isfinite(s) or s < 0 or s != int(s) for s in size):
            raise InputError(f"the header declares an invalid size {_xyz(size, 3)}", path)
        if any(int(s) == 0 for s in size):
            raise InputError(f"empty image (size {tuple(int(s) for s in size)}, x,y,z...): no voxels", path)
    if spacing is not None and len(spacing):
        if not all(np.isfinite(spacing)):
            raise InputError(f"the voxel spacing in the header is not a number: {list(spacing)}", path)
        if any(s <= 0 for s in spacing):
            raise InputError(f"the voxel spacing in the header is zero or negative: {_xyz(spacing, 6)} mm; it must "
                             "be positive (fix the header)", path)
    if origin is not None and len(origin) and not all(np.isfinite(origin)):
        raise InputError(f"the origin in the header is not a number: {list(origin)}", path)
    if direction is not None and len(direction):
        d = np.asarray(direction, dtype=np.float64)
        if not np.all(np.isfinite(d)):
            raise InputError(f"the direction matrix in the header holds NaN or Inf: {d.tolist()}", path)
        n = int(round(np.sqrt(d.size)))
        if n * n == d.size and n >= 2:
            m = d.reshape(n, n)
            norms = np.linalg.norm(m, axis=1)
            if np.any(norms == 0):
                raise InputError(f"the header gives an axis a zero direction vector (zero spacing): {m.tolist()}",
                                 path)
            unit = m / norms[:, None]
            if abs(float(np.linalg.det(unit))) < 1e-3:
                raise InputError(f"the direction matrix in the header is singular (two axes point the same way): "
                                 f"{np.round(m, 4).tolist()}", path)


def _type_bytes(name: str) -> int:
    """Bytes per value of a MetaImage ``ElementType`` or NRRD ``type`` name (8 when unknown: the safe side)."""
    n = name.lower()
    for bits, nbytes in (("64", 8), ("32", 4), ("16", 2), ("8", 1)):
        if bits in n:
            return nbytes
    for word, nbytes in (("double", 8), ("long", 8), ("char", 1), ("short", 2), ("float", 4), ("int", 4)):
        if word in n:
            return nbytes
    return 8


def _check_text_header(path: Path) -> None:
    """Geometry checks on a MetaImage/NRRD header, before ITK reads it (ITK silently reads a NaN origin as 0, takes
    the absolute value of a negative spacing and turns a NaN direction into zeros)."""
    h = _text_header(path)
    if h is None:
        return
    for key, fmt in (("ndims", "MetaImage"), ("dimension", "NRRD")):  # ITK crashes (SIGSEGV) on NDims = -1 or 1e9
        if key in h:
            n = _numbers(h[key])
            if len(n) != 1 or not np.isfinite(n[0]) or n[0] != int(n[0]) or not 1 <= n[0] <= 16:
                raise InputError(f"corrupt {fmt} header: {key} = {h[key]!r} is not a number of dimensions", path)
            sizes = _numbers(h.get("dimsize", h.get("sizes", "")))
            if sizes and len(sizes) != int(n[0]):
                raise InputError(f"corrupt {fmt} header: {key} = {int(n[0])} but {len(sizes)} sizes are given",
                                 path)
    detached = h.get("elementdatafile", h.get("data file", h.get("datafile", ""))).strip()
    if detached and detached.upper() not in ("LOCAL", "LIST") and not detached.upper().startswith("LIST") \
            and "%" not in detached and " " not in detached and not (path.parent / detached).is_file():
        raise InputError(f"the header keeps its voxels in '{detached}', which is not beside it: copy the data file "
                         "next to the header (or choose the file that holds both)", path)
    if "dimsize" in h:  # MetaImage
        size = _numbers(h["dimsize"])
        spacing = _numbers(h.get("elementspacing", h.get("elementsize", "")))
        origin = _numbers(h.get("offset", h.get("origin", h.get("position", ""))))
        direction = _numbers(h.get("transformmatrix", h.get("rotation", h.get("orientation", ""))))
        _check_geometry_values(path, spacing, origin, direction, size)
        channels = _numbers(h.get("elementnumberofchannels", "1"))
        check_memory(size, int(channels[0]) if channels and np.isfinite(channels[0]) and channels[0] >= 1 else 1,
                     _type_bytes(h.get("elementtype", "")), path)
        return
    size = _numbers(h.get("sizes", ""))
    if size and all(np.isfinite(v) and v >= 0 for v in size):
        check_memory(size, 1, _type_bytes(h.get("type", "")), path)
    spacing = _numbers(h.get("spacings", ""))
    origin = _numbers(h.get("space origin", ""))
    directions = h.get("space directions", "")
    vectors = [_numbers(v) for v in re.findall(r"\(([^)]*)\)", directions)]
    # NRRD writes "nan" spacing for axes that have none (e.g. the components of a vector image): not an error
    _check_geometry_values(path, [v for v in spacing if not np.isnan(v)], origin,
                           [x for v in vectors for x in v], size or None)


def check_header(path: PathLike) -> None:
    """The package's own checks of a file's header, before any ITK reader touches it (some damaged headers crash
    ITK: a MetaImage ``NDims = -1`` is a segmentation fault): MetaImage/NRRD text headers and NIfTI binary headers
    (sizes, dimensions, spacing, origin, direction, data offset, the memory the voxels need). Raises
    :class:`InputError` naming the file; other formats pass. Call it before any direct SimpleITK read of a user
    file (:func:`read_volume` does)."""
    p = Path(path)
    if not p.is_file():
        return
    _check_text_header(p)
    if volume_suffix(p) in (".nii", ".nii.gz"):
        _check_nifti_header(p)


def header_information(path: PathLike) -> Optional[sitk.ImageFileReader]:
    """SimpleITK's reader of the file ``path`` with its header read (the voxels are not; the package's own header
    checks, :func:`check_header`, come first), or ``None`` when ITK cannot read that header (the full reader then
    names the problem). ITK's C-level complaints stay off the terminal."""
    check_header(path)  # a damaged header can crash ITK's reader (SIGSEGV): the package's checks come first
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_messages():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _check_before_read(path: Path) -> None:
    """The checks made before any voxel is read: the header's geometry (own parse of MetaImage/NRRD/NIfTI
    headers), then the memory the voxels need (SimpleITK reads the header only)."""
    _check_text_header(path)
    if volume_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_messages():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(_unreadable_message(path, str(exc)), path) from exc
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    nbytes = next((b for k, b in _PIXEL_BYTES.items() if k in pixel), 8)
    check_memory(reader.GetSize(), reader.GetNumberOfComponents(), nbytes, path)


def _nifti_header(path: Path) -> Optional[Tuple[str, bytes]]:
    """``(endian, first 540 bytes)`` of a NIfTI-1/2 file, or ``None`` when the header is not one we know."""
    import gzip
    import struct
    import zlib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            head = handle.read(540)
    except (OSError, EOFError, zlib.error):
        return None  # the full scan reports it
    if len(head) < 348:
        return None
    for e in ("<", ">"):
        if struct.unpack(e + "i", head[:4])[0] in (348, 540):
            return e, head
    return None


def _check_nifti_header(path: Path) -> None:
    """Refuse a NIfTI header with a zero-size axis, a zero/negative/NaN voxel size, a NaN affine, or more voxels
    than memory holds (ITK reads dim 0 as 1 and pixdim 0 as 1 mm, silently)."""
    import struct

    found = _nifti_header(path)
    if found is None:
        return
    e, head = found
    if struct.unpack(e + "i", head[:4])[0] == 348:
        dims = struct.unpack(e + "8h", head[40:56])
        datatype, bitpix = struct.unpack(e + "2h", head[70:74])
        pixdim = struct.unpack(e + "8f", head[76:108])
        qform, sform = struct.unpack(e + "2h", head[252:256])
        quatern = struct.unpack(e + "6f", head[256:280])
        srow = struct.unpack(e + "12f", head[280:328])
    else:
        if len(head) < 540:
            return
        datatype, bitpix = struct.unpack(e + "2h", head[12:16])
        dims = struct.unpack(e + "8q", head[16:80])
        pixdim = struct.unpack(e + "8d", head[104:168])
        qform, sform = struct.unpack(e + "2i", head[344:352])
        quatern = struct.unpack(e + "6d", head[352:400])
        srow = struct.unpack(e + "12d", head[400:496])
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        return  # ITK decides (and the scan)
    expected_bits = _NIFTI_BITPIX.get(int(datatype))
    if expected_bits is not None and int(bitpix) != expected_bits:
        raise InputError(f"corrupt NIfTI header: bitpix {int(bitpix)} does not match datatype {int(datatype)} "
                         f"({expected_bits} bits per voxel)", path)
    offset = struct.unpack(e + "f", head[108:112])[0] if struct.unpack(e + "i", head[:4])[0] == 348 else \
        float(struct.unpack(e + "q", head[168:176])[0])
    if not np.isfinite(offset) or offset < 0 or offset > 1 << 40:
        raise InputError(f"corrupt NIfTI header: the voxel data offset (vox_offset) is {offset!r}", path)
    size = [int(d) for d in dims[1: ndim + 1]]
    if any(s < 0 for s in size):
        raise InputError(f"the header declares a negative size {tuple(size)}", path)
    if any(s == 0 for s in size):
        raise InputError(f"empty image (size {tuple(size)}, x,y,z...): no voxels", path)
    spatial = min(ndim, 3)
    _check_geometry_values(path, pixdim[1: 1 + spatial], None, None, None)
    if qform > 0 and not all(np.isfinite(quatern)):
        raise InputError(f"the qform (orientation) in the header holds NaN or Inf: {list(quatern)}", path)
    if sform > 0 and not all(np.isfinite(srow)):
        raise InputError(f"the sform (affine) in the header holds NaN or Inf: {list(srow)}", path)
    check_memory(size, 1, max(int(bitpix), 8) // 8, path)


#: what a file is, by its first bytes, for files that are no image we read
_MAGIC: Tuple[Tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG picture"), (b"\xff\xd8\xff", "a JPEG picture"), (b"GIF8", "a GIF picture"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip-compressed file"), (b"BM", "a BMP picture"), (b"II*\x00", "a TIFF picture"),
    (b"MM\x00*", "a TIFF picture"),
)


def _what_file(path: Path) -> Optional[str]:
    """What ``path`` is when its first bytes tell (``"a text file (it starts with 'hello')"``, ``"a PNG picture"``,
    ``"a single DICOM file"``), else ``None``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a single DICOM file (give the folder holding its series)"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    if text and printable >= 0.95 * len(text):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"a text file (it starts with {first[:40]!r})" if first else "a text file"
    return None


def _unreadable_message(path: Path, itk_message: str = "") -> str:
    """One line, in our words, for a file no image reader could read: what the file is when its first bytes tell,
    else which formats are read; ITK's own reason only without its source paths and the file name."""
    suffix = volume_suffix(path)
    readable = "NIfTI, NRRD, MHA/MHD, a DICOM series folder or an LA .h5"
    kind = _what_file(path)
    if kind is not None and kind.startswith("a text file") and (suffix in (".mhd", ".nhdr") or "'NRRD" in kind):
        kind = None  # a header that is text by design: damaged, not a different kind of file
    if kind is not None:
        expected = f"a {suffix} image" if suffix else "an image"
        return f"cannot read the file: it is {kind}, not {expected} (readable: {readable})"
    detail = ""
    lines = [line.strip() for line in itk_message.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "ERROR:" in line), None)
    if first is not None:  # the innermost reason: the last line from the ERROR on, without ITK's prefixes
        line = lines[-1].split("ERROR:", 1)[-1]
        line = re.sub(r"^\s*\[\w+\]\s*\w+:\s*", "", line)
        line = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", line).strip()
        line = line.replace(f'"{path}"', "the file").replace(str(path), "the file")
        if "Unable to determine ImageIO reader" in line:
            line = "no image reader recognises its content"
        if line and ".cxx" not in line and "/" not in line:
            detail = f": {line[:200]}"
    hint = "" if suffix else " (no image suffix such as .nii.gz or .nrrd)"
    return f"cannot read the file: corrupt, truncated or not an image{hint}{detail} (readable: {readable})"


@contextlib.contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the process locale afterwards. GDCM may switch the C locale to "C" for the whole process (its DICOM
    writer does, measured with SimpleITK 2.5), which silently makes Python's default text encoding ASCII
    (``open()``/``read_text()`` without an encoding then fail on any non-ASCII file, e.g. a README or a YAML
    config). Reading is guarded too, as a precaution."""
    try:
        saved = locale.setlocale(locale.LC_ALL)
    except locale.Error:  # pragma: no cover - unusual platforms
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            try:
                locale.setlocale(locale.LC_ALL, saved)
            except locale.Error:  # pragma: no cover
                pass


def _read_dicom_series(folder: Path, series_id: Optional[str] = None) -> sitk.Image:
    check_itk_path(folder)
    with _keep_locale():
        return _read_dicom_series_inner(folder, series_id)


def _read_dicom_series_inner(folder: Path, series_id: Optional[str] = None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    try:
        with _itk_messages():
            ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:
        raise InputError(f"cannot scan the folder for DICOM series: {exc}", folder) from exc
    if not ids:
        raise InputError("folder holds no DICOM series and no image files (.nii.gz, .nii, .nrrd, .mha/.mhd)", folder)
    series_files = {i: list(reader.GetGDCMSeriesFileNames(str(folder), i)) for i in ids}
    if series_id is None:
        if len(ids) > 1:
            raise SeriesChoiceError(folder, {i: len(f) for i, f in series_files.items()})
        series_id = ids[0]
    elif series_id not in ids:
        raise InputError(f"DICOM series {series_id!r} not found; the folder holds {ids}", folder)
    files = series_files[series_id]
    _check_dicom_files(folder, files, [f for fs in series_files.values() for f in fs])
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    try:
        with _itk_messages():
            first.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM slice {Path(files[0]).name}: {str(exc).strip()[:200]}", folder) from exc
    size = list(first.GetSize())[:2] + [len(files)]
    pixel = sitk.GetPixelIDValueAsString(first.GetPixelID())
    check_memory(size, first.GetNumberOfComponents(), next((b for k, b in _PIXEL_BYTES.items() if k in pixel), 8),
                 folder, what="voxels (DICOM slices)")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_messages() as said:
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {series_id}: {str(exc).strip()[:300]}", folder) from exc
    _refuse_itk_complaints(folder, said)
    _check_dicom_spacing(folder, reader, len(files))
    return image


class SeriesChoiceError(InputError):
    """A DICOM folder holds several series and none was chosen. ``series``: ``{series id: number of slices}``.
    The message says how many series there are and lists them; the caller adds how to choose one (the command line
    names its option, a script passes ``series_id=``)."""

    def __init__(self, folder: PathLike, series: Dict[str, int]):
        self.series = dict(series)
        listed = ", ".join(f"{i} ({n} slices)" for i, n in self.series.items())
        super().__init__(f"folder holds {len(self.series)} DICOM series ({listed}); choose one of them", folder)


def _check_dicom_files(folder: Path, files: Sequence[str], all_series_files: Sequence[str]) -> None:
    """Refuse a DICOM folder in which a file that looks like a DICOM slice (``.dcm``/``.ima`` suffix or the
    ``DICM`` preamble) belongs to no readable series: GDCM skips such a damaged slice silently, which would leave a
    gap in the volume."""
    used = {os.path.abspath(f) for f in all_series_files}
    skipped = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or os.path.abspath(p) in used:
            continue
        looks = p.suffix.lower() in (".dcm", ".ima")
        if not looks:
            try:
                with open(p, "rb") as fh:
                    looks = fh.read(132)[128:132] == b"DICM"
            except OSError:
                looks = False
        if looks:
            skipped.append(p.name)
    if skipped:
        raise InputError(f"{len(skipped)} DICOM file(s) in the folder are damaged or belong to no series "
                         f"({', '.join(skipped[:3])}{'...' if len(skipped) > 3 else ''}): the series would have a "
                         "gap; remove or replace them", folder)


def _check_dicom_spacing(folder: Path, reader: sitk.ImageSeriesReader, n: int) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a missing slice): the volume's single
    z spacing would put every slice after the gap at the wrong place."""
    if n < 3:
        return
    try:
        positions = [_numbers(reader.GetMetaData(i, "0020|0032")) for i in range(n)]
        orient = _numbers(reader.GetMetaData(0, "0020|0037"))
    except RuntimeError:  # tags absent: ITK used its own ordering; nothing to compare
        return
    if len(orient) != 6 or any(len(p) != 3 for p in positions):
        return
    normal = np.cross(orient[:3], orient[3:])
    z = np.sort(np.asarray(positions, dtype=np.float64) @ normal)
    gaps = np.diff(z)
    if gaps.size and np.all(np.isfinite(gaps)):
        median = float(np.median(gaps))
        if median <= 0 or np.any(np.abs(gaps - median) > max(0.05 * abs(median), 1e-3)):
            worst = int(np.argmax(np.abs(gaps - median)))
            raise InputError(f"the DICOM slices are not evenly spaced: gap of {gaps[worst]:.3g} mm after slice "
                             f"{worst + 1} of {n} where the others are {median:.3g} mm (a missing or duplicated "
                             "slice?)", folder)


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64
#: bits per voxel of each NIfTI datatype code (bitpix must agree)
_NIFTI_BITPIX = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32, 1024: 64,
                 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}


def _nifti_scan(path: Path) -> int:
    """Check a ``.nii``/``.nii.gz`` file is complete and count its non-finite float voxels.

    Needed because ITK's NIfTI reader silently accepts a truncated file (missing voxels come back as garbage/0)
    and replaces NaN voxels by 0, so neither problem would be visible in the array it returns. The file is
    streamed once (gzip CRC checked), in chunks, without holding a second copy of the data.
    """
    import gzip
    import struct
    import zlib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            head = handle.read(540)
            if len(head) < 348:
                raise InputError("truncated NIfTI file (incomplete header)", path)
            endian = None
            for e in ("<", ">"):
                size = struct.unpack(e + "i", head[:4])[0]
                if size in (348, 540):
                    endian = e
                    break
            if endian is None:
                return 0  # not a NIfTI header we know: let ITK decide
            if size == 348:
                dims = struct.unpack(endian + "8h", head[40:56])
                datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
                offset = int(struct.unpack(endian + "f", head[108:112])[0])
            else:
                datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
                dims = struct.unpack(endian + "8q", head[16:80])
                offset = int(struct.unpack(endian + "q", head[168:176])[0])
            ndim = int(dims[0])
            if not 1 <= ndim <= 7:
                return 0
            nvox = int(np.prod([max(int(d), 0) for d in dims[1: ndim + 1]], dtype=np.int64))
            nbytes = nvox * max(int(bitpix), 0) // 8
            if len(head) > offset:
                leftover = head[offset:]
            else:
                skipped = handle.read(offset - len(head))
                if len(skipped) < offset - len(head):
                    raise InputError("truncated NIfTI file (ends before the voxel data)", path)
                leftover = b""
            fmt = _NIFTI_FLOATS.get(int(datatype))
            item = int(bitpix) // 8 if fmt else 1
            remaining = nbytes - len(leftover)
            bad = 0
            buf = leftover
            chunk = 1 << 22
            while True:
                if fmt and len(buf) >= item:
                    usable = len(buf) - len(buf) % item
                    arr = np.frombuffer(buf[:usable], dtype=endian + fmt)
                    bad += int(arr.size - np.count_nonzero(np.isfinite(arr)))
                    buf = buf[usable:]
                if remaining <= 0:
                    break
                data = handle.read(min(chunk, remaining))
                if not data:
                    break
                remaining -= len(data)
                buf = buf + data if buf else data
            if remaining > 0:
                raise InputError(
                    f"truncated NIfTI file: {remaining} of {nbytes} bytes of voxel data are missing", path
                )
            return bad
    except (OSError, EOFError, zlib.error) as exc:
        kind = _what_file(path)
        if kind is not None and not kind.startswith("a gzip"):
            raise InputError(f"corrupt or truncated file: it is {kind}, not a NIfTI image", path) from exc
        raise InputError(f"corrupt or truncated file ({exc})", path) from exc


def read_volume(
    path: PathLike,
    *,
    nonfinite: NonFinite = "error",
    allow_channels: bool = False,
    series_id: Optional[str] = None,
) -> Volume:
    """Read a 3D volume (NIfTI, NRRD, MHA/MHD, or a folder holding one DICOM series) keeping its geometry.

    The array keeps the stored pixel type; see the module doc for the checks. ``nonfinite``: ``"error"`` (default)
    or ``"zero"``. ``allow_channels``: accept vector pixels, returned as ``(C, Z, Y, X)``. ``series_id`` picks one
    series from a DICOM folder holding several.
    """
    p = Path(path)
    if nonfinite not in ("error", "zero"):
        raise InputError(f"nonfinite must be 'error' or 'zero', got {nonfinite!r}")
    nifti_bad = 0
    if p.is_file() and p.stat().st_size > 0 and volume_suffix(p) in (".nii", ".nii.gz"):
        _check_nifti_header(p)  # sizes, spacing, memory: before the scan streams the voxels
        nifti_bad = _nifti_scan(p)
    image = _read_sitk(p, series_id)
    volume = from_sitk(image, p, allow_channels=allow_channels)
    if nifti_bad and nonfinite == "error":
        raise InputError(
            f"{nifti_bad} non-finite voxels (NaN or Inf) of {volume.array.size}; fix the file (replace NaN/inf), "
            "or read it in Python with nonfinite='zero' to replace them by 0",
            p,
        )
    volume.array = check_finite(volume.array, p, nonfinite)
    return volume


def read_image(path: PathLike, *, nonfinite: NonFinite = "error", series_id: Optional[str] = None) -> Volume:
    """Read an image for the network: like :func:`read_volume` (or :func:`read_la_h5` for ``.h5``) with a
    ``float32`` array (uint8/int16 images such as some Task04_Hippocampus files are converted)."""
    if volume_suffix(path) in (".h5", ".hdf5"):
        image, _ = read_la_h5(path, with_label=False)
        return image
    volume = read_volume(path, nonfinite=nonfinite, series_id=series_id)
    volume.array = volume.array.astype(np.float32, copy=False)
    return volume


def read_label(
    path: PathLike,
    image: Optional[Volume] = None,
    num_classes: Optional[int] = None,
    label_values: Optional[Sequence[int]] = None,
) -> Volume:
    """Read a label map: integer array (see :func:`label_array`), validated against ``image``'s geometry (when
    given) and against the declared classes (``label_values``: the file values of the classes, or
    ``num_classes``: values ``0..num_classes-1``). Errors are :class:`InputError` naming the label file."""
    p = Path(path)
    volume = read_volume(p)
    volume.array = label_array(volume.array, p)
    if image is not None:
        check_label_geometry(volume, image, p)
    check_label_values(volume.array, p, num_classes, label_values)
    return volume


def read_la_h5(
    path: PathLike,
    spacing: Sequence[float] = LA_H5_SPACING,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    with_label: bool = True,
    nonfinite: NonFinite = "error",
) -> Tuple[Volume, Optional[Volume]]:
    """Read the LA release format ``mri_norm2.h5``: datasets ``image`` (float32, z-scored) and optionally
    ``label`` (uint8 {0,1}), both stored with axes **x, y, z**; transposed here to z, y, x.

    The file stores no geometry: ``spacing`` (x, y, z mm; 0.625 isotropic for the LA release) and ``origin`` are
    parameters, direction is identity. ``with_label=False`` never touches the ``label`` dataset (unlabeled use).
    Returns ``(image Volume float32, label Volume uint8 or None)``; ``None`` also when the file has no ``label``.
    """
    import h5py

    p = Path(path)
    if not p.exists():
        raise InputError("file not found", p)
    if p.is_dir():
        raise InputError("a folder, expected an HDF5 file (mri_norm2.h5)", p)
    try:
        handle = h5py.File(str(p), "r")
    except OSError as exc:
        raise InputError(f"cannot open as HDF5 (corrupt or not an HDF5 file): {exc}", p) from exc
    with handle:
        try:  # h5py raises RuntimeError (not OSError) for damaged metadata: a bad symbol table, an address overflow
            if "image" not in handle:
                raise InputError(f"HDF5 file has no 'image' dataset (keys: {sorted(handle.keys())})", p)
            for key in ("image", "label") if with_label and "label" in handle else ("image",):
                dataset = handle[key]  # the declared shape first: a damaged one must not allocate
                if not isinstance(dataset, h5py.Dataset):
                    raise InputError(f"'{key}' is a {type(dataset).__name__}, not a dataset (corrupt file?)", p)
                check_memory(tuple(dataset.shape), 1, int(dataset.dtype.itemsize), p,  # stored x, y, z
                             what=f"voxels in '{key}'")
            raw = np.asarray(handle["image"][()])
            raw_label = np.asarray(handle["label"][()]) if (with_label and "label" in handle) else None
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot read the HDF5 datasets (corrupt file): {exc}", p) from exc
    image_arr = _h5_array(raw, p, "image")
    image_arr = check_finite(image_arr.astype(np.float32, copy=False), p, nonfinite)
    image = Volume(image_arr, tuple(spacing), tuple(origin), np.eye(3), str(p))
    label = None
    if raw_label is not None:
        label_arr = label_array(_h5_array(raw_label, p, "label"), p)
        if label_arr.shape != image_arr.shape:
            raise InputError(
                f"'label' shape {raw_label.shape} does not match 'image' shape {raw.shape} (x,y,z)", p
            )
        label = Volume(label_arr, tuple(spacing), tuple(origin), np.eye(3), str(p))
    return image, label


def _h5_array(raw: np.ndarray, path: Path, key: str) -> np.ndarray:
    if raw.size == 0:
        raise InputError(f"'{key}' dataset is empty (shape {raw.shape})", path)
    if raw.ndim == 4 and 1 in raw.shape:
        raw = raw.reshape([s for s in raw.shape if s != 1] if raw.shape.count(1) == 1 else raw.shape)
    if raw.ndim != 3:
        raise InputError(f"'{key}' dataset has shape {raw.shape}; a 3D x,y,z array is required", path)
    return np.ascontiguousarray(raw.transpose(2, 1, 0))  # x,y,z -> z,y,x


def read_image_or_h5(path: PathLike, h5_spacing: Sequence[float] = LA_H5_SPACING, **kwargs) -> Volume:
    """An image from any supported file: ``.h5`` via :func:`read_la_h5` (image only, label never read) with
    ``h5_spacing``; anything else via :func:`read_image`. The array is float32."""
    if volume_suffix(path) in (".h5", ".hdf5"):
        image, _ = read_la_h5(path, spacing=h5_spacing, with_label=False, **kwargs)
        return image
    return read_image(path, **kwargs)


def read_label_or_h5(
    path: PathLike,
    image: Optional[Volume] = None,
    num_classes: Optional[int] = None,
    label_values: Optional[Sequence[int]] = None,
    h5_spacing: Sequence[float] = LA_H5_SPACING,
) -> Volume:
    """A label map from any supported file (``.h5``: the ``label`` dataset), validated like :func:`read_label`."""
    p = Path(path)
    if volume_suffix(p) in (".h5", ".hdf5"):
        _, label = read_la_h5(p, spacing=h5_spacing, with_label=True)
        if label is None:
            raise InputError("HDF5 file has no 'label' dataset", p)
        if image is not None:
            check_label_geometry(label, image, p)
        check_label_values(label.array, p, num_classes, label_values)
        return label
    return read_label(p, image, num_classes, label_values)


# ---------------------------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------------------------
def _write_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(f"cannot write this format: use one of {', '.join(WRITE_SUFFIXES)}", path)


_FILE_MODE = FILE_MODE


def _atomic_sitk_write(image: sitk.Image, path: Path, overwrite: bool, compress: bool) -> Path:
    suffix = _write_suffix(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path)
    if path.is_dir():
        raise InputError("output path is a folder", path)
    check_itk_path(path.parent / f".{path.name}.xxxxxxxx.tmp", "write")  # the temporary name it writes first
    # The temporary name keeps the real suffix: SimpleITK picks the writer from it.
    tmp_path = temp_beside(path, ".nrrd" if suffix == ".seg.nrrd" else suffix)
    extra: List[Path] = []
    if suffix == ".mhd":  # MetaImage header + .raw/.zraw data file next to it
        extra.append(tmp_path.with_suffix(".zraw" if compress else ".raw"))
    try:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp_path))
        writer.SetUseCompression(bool(compress))
        with _itk_messages():
            writer.Execute(image)
        _verify_written(tmp_path, path, extra)
        os.chmod(tmp_path, _FILE_MODE)
        if suffix == ".mhd":
            _finish_mhd(tmp_path, path, compress, overwrite)
        else:
            replace_file(tmp_path, path)
    except RuntimeError as exc:
        raise InputError(f"cannot write the file: {_itk_reason(str(exc), tmp_path)}", path) from exc
    finally:
        for leftover in [tmp_path] + extra:
            if leftover.exists():
                try:
                    leftover.unlink()
                except OSError:
                    pass
    return path


def _itk_reason(text: str, tmp_path: Path) -> str:
    """ITK's exception text as one short line: the lines from its ``ERROR:`` on, without source locations, object
    addresses and the temporary file's name."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ERROR" in line), 0)
    words = []
    for line in lines[start:]:
        line = re.sub(r"^.*?ERROR:\s*", "", line)
        line = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
        line = line.replace(str(tmp_path), "the file").replace(tmp_path.name, "the file")
        line = re.sub(r"\S+\.(cxx|cc|h):\d+:?", "", line).strip()
        if line and line not in words:
            words.append(line)
    return " ".join(words)[:300] or "the writer failed"


def _verify_written(tmp_path: Path, path: Path, extra: Sequence[Path]) -> None:
    """Read back a file ITK just wrote: its writers ignore a short write (a full disk, a file size limit) and would
    leave a truncated file that :func:`os.replace` then publishes. NIfTI is streamed through the package's own
    check (ITK's NIfTI reader accepts a truncated file); other formats through ITK's reader."""
    try:
        if volume_suffix(tmp_path) in (".nii", ".nii.gz"):
            _nifti_scan(tmp_path)
        else:
            with _itk_messages() as said:
                sitk.ReadImage(str(tmp_path))
            _refuse_itk_complaints(tmp_path, said)
    except (InputError, RuntimeError) as exc:
        free = ""
        try:
            free = f", {_fmt_bytes(shutil.disk_usage(path.parent).free)} free on its disk"
        except OSError:
            pass
        raise InputError(f"cannot write the file: what was written does not read back complete (a full disk or a "
                         f"file size limit{free}); nothing was replaced", path) from exc


def _finish_mhd(tmp_header: Path, path: Path, compress: bool, overwrite: bool) -> None:
    """Move a MetaImage header+data pair to its final names (data first, header last, both atomic)."""
    tmp_data = tmp_header.with_suffix(".zraw" if compress else ".raw")
    data = path.with_suffix(".zraw" if compress else ".raw")
    if data.exists() and not overwrite:
        raise OutputExistsError("data file of the .mhd exists; pass --overwrite to replace it", data)
    header = tmp_header.read_text(encoding="latin-1")
    lines = [
        f"ElementDataFile = {data.name}" if line.startswith("ElementDataFile") else line
        for line in header.splitlines()
    ]
    os.chmod(tmp_data, _FILE_MODE)
    replace_file(tmp_data, data)
    write_text_atomic("\n".join(lines) + "\n", path, overwrite=True, encoding="latin-1")
    tmp_header.unlink()


def write_volume(volume: Volume, path: PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``volume`` with exactly its geometry, format by suffix (``.nii.gz``, ``.nii``, ``.nrrd``,
    ``.seg.nrrd``, ``.mha``, ``.mhd``), atomically. A ``(C, Z, Y, X)`` array is written as a vector image (one
    component per channel). ``bool`` arrays are written as uint8, int64 as the smallest integer type holding the
    values. Raises :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false. Returns the path."""
    p = Path(path)
    _write_suffix(p)
    if p.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", p)
    return _atomic_sitk_write(to_sitk(volume), p, overwrite, compress)


#: default segment colours (RGB 0-1) for :func:`write_segmentation`, one per foreground class
SEGMENT_COLORS: Tuple[Tuple[float, float, float], ...] = (
    (0.945, 0.839, 0.569),
    (0.847, 0.396, 0.310),
    (0.502, 0.682, 0.502),
    (0.694, 0.478, 0.396),
    (0.435, 0.722, 0.824),
    (0.565, 0.933, 0.565),
    (0.863, 0.961, 0.078),
    (0.306, 0.247, 0.0),
)


def write_segmentation(
    labels: Volume,
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
    label_values: Optional[Sequence[int]] = None,
    overwrite: bool = False,
    colors: Optional[Sequence[Tuple[float, float, float]]] = None,
) -> Path:
    """Write a label map; for ``.seg.nrrd`` also the 3D Slicer segment metadata (``SegmentN_Name``,
    ``SegmentN_LabelValue``...) so Slicer loads it as a segmentation with named segments.

    ``class_names[i]`` names class index ``i`` (index 0, the background, gets no segment); ``label_values[i]``
    is the voxel value of class ``i`` in ``labels`` (default ``i``).
    """
    p = Path(path)
    suffix = _write_suffix(p)
    array = label_array(labels.array, p)
    image = to_sitk(labels.with_array(array))
    if suffix == ".seg.nrrd":
        if label_values is not None:
            values = [int(v) for v in label_values]
        elif class_names is not None:
            values = list(range(len(class_names)))  # class i has voxel value i
        else:
            values = sorted(set(int(v) for v in np.unique(array)) | {0})
        names = list(class_names) if class_names is not None else [f"class_{v}" for v in values]
        if len(names) != len(values):
            raise InputError(f"{len(names)} class names for {len(values)} label values", p)
        extra = sorted(set(int(v) for v in np.unique(array)) - set(values))
        if extra:
            raise InputError(f"label values {extra} have no segment (classes {names} with values {values})", p)
        palette = list(colors) if colors is not None else list(SEGMENT_COLORS)
        extent = _extent_string(array)
        image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
        image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
        image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
        seg = 0
        for index, value in enumerate(values):
            if int(value) == 0:
                continue
            name = names[index] if index < len(names) else f"class_{value}"
            colour = palette[(seg) % len(palette)]
            key = f"Segment{seg}_"
            image.SetMetaData(key + "ID", f"Segment_{int(value)}")
            image.SetMetaData(key + "Name", str(name))
            image.SetMetaData(key + "NameAutoGenerated", "0")
            image.SetMetaData(key + "Color", " ".join(f"{c:.6g}" for c in colour))
            image.SetMetaData(key + "ColorAutoGenerated", "0")
            image.SetMetaData(key + "LabelValue", str(int(value)))
            image.SetMetaData(key + "Layer", "0")
            image.SetMetaData(key + "Extent", extent)
            image.SetMetaData(key + "Tags", "")
            seg += 1
    if p.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", p)
    return _atomic_sitk_write(image, p, overwrite, compress=True)


def _extent_string(array: np.ndarray) -> str:
    z, y, x = array.shape[-3:]
    return f"0 {x - 1} 0 {y - 1} 0 {z - 1}"


def list_volume_files(folder: PathLike) -> List[Path]:
    """Readable volume files directly inside ``folder`` (sorted by name; hidden files skipped)."""
    f = Path(folder)
    if not f.is_dir():
        raise InputError("not a folder", f)
    return sorted(p for p in f.iterdir() if is_volume_file(p))


def describe(volume: Volume) -> Dict[str, object]:
    """A JSON-able summary of a volume's geometry (for logs and model cards)."""
    return {
        "size_xyz": list(volume.size_xyz),
        "spacing_xyz": [float(s) for s in volume.spacing],
        "origin_xyz": [float(o) for o in volume.origin],
        "direction": np.asarray(volume.direction).reshape(-1).tolist(),
        "dtype": str(volume.array.dtype),
    }
