"""Atomic, non-clobbering file output shared by every writer of the package (volumes, models, CSVs, configs).

A file appears complete or not at all: it is written to a temporary name in the destination folder and moved over
the destination with :func:`os.replace`; on any error the temporary file is removed and an existing destination is
untouched. Without ``overwrite`` an existing destination is an :class:`~semisupseg.errors.OutputExistsError`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable, Iterator, List, Optional, Union

from semisupseg.errors import InputError, OutputExistsError

PathLike = Union[str, Path]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of new outputs (``mkstemp`` creates 0600 files; outputs should look like any other written file)
FILE_MODE = 0o666 & ~_current_umask()


def check_writable(path: PathLike, overwrite: bool) -> Path:
    """Raise unless ``path`` may be written: not a folder, and absent unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise InputError("output path is a folder", path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path)
    return path


def check_folder_writable(folder: PathLike) -> Path:
    """Raise ``OSError`` naming ``folder`` unless files can be made in it, or, when it does not exist yet, in the
    nearest folder above it that does (where it would be made). A real probe (a temporary file made and removed),
    so a read-only disk, an immutable folder or a missing permission show even for root, before long work starts;
    nothing is left behind."""
    folder = Path(folder).expanduser().absolute()
    place = next((p for p in [folder] + list(folder.parents) if p.exists()), None)
    if place is None or not place.is_dir():
        raise OSError(20, "not a folder", str(place or folder))
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=str(place))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    os.close(fd)
    os.unlink(probe)
    return folder


#: the temporary files of :func:`atomic_path` are named ``.<destination name>.<random>.tmp<suffix>``
TEMP_MARK = ".tmp"


def temp_destination(name: str) -> Optional[str]:
    """The destination file name a temporary file of :func:`atomic_path` called ``name`` was written for, or
    ``None`` when ``name`` is not such a temporary file (``.resume.pt.k3j_x.tmp`` -> ``resume.pt``)."""
    if not name.startswith(".") or TEMP_MARK not in name:
        return None
    stem = name[1:name.rindex(TEMP_MARK)]
    if "." not in stem:
        return None
    dest = stem[:stem.rindex(".")]
    return dest or None


def remove_stale_temps(folder: PathLike, names: Optional[Iterable[str]] = None) -> List[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` when its process was killed (SIGKILL, power
    loss: its ``finally`` never ran); only those written for a destination in ``names`` (all when ``None``).

    Call it only when no other process may be writing there (the training engine does, after its heartbeat check,
    when it takes a run directory). Returns the removed paths."""
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed: List[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        dest = temp_destination(p.name)
        if dest is None or (wanted is not None and dest not in wanted) or not p.is_file():
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def temp_beside(path: PathLike, suffix: str = "") -> Path:
    """A new empty temporary file ``.<name>.<random>.tmp<suffix>`` in ``path``'s folder (made when missing). A
    failure (a read-only or full place) is an ``OSError`` naming ``path``, the file the user asked for, not the
    temporary name."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{suffix}", dir=str(path.parent))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.close(fd)
    return Path(tmp)


#: how long :func:`replace_file` keeps trying while Windows refuses to replace a file another process has open
REPLACE_RETRY_S = 2.0
_WINDOWS = os.name == "nt"


def replace_file(source: PathLike, target: PathLike) -> None:
    """``os.replace(source, target)``; on Windows a ``PermissionError`` (the target open in another process without
    delete sharing: a reader polling it, an antivirus or search indexer) is retried for :data:`REPLACE_RETRY_S`
    seconds before it is raised. Elsewhere a replace never waits for readers."""
    deadline = time.monotonic() + REPLACE_RETRY_S
    while True:
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if not _WINDOWS or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    ``suffix`` is appended to the temporary name (writers that pick the format by suffix need the real one).
    """
    path = check_writable(path, overwrite)
    tmp_path = temp_beside(path, suffix)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        replace_file(tmp_path, path)
    finally:
        if tmp_path.exists():
            try:
                tmp_path.unlink()
            except OSError:
                pass


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", overwrite: bool = False, encoding: Optional[str] = "utf-8",
                newline: Optional[str] = None, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``"w"`` text, ``"wb"`` binary); on success it replaces
    ``path``. ``fsync`` flushes it to disk first (for state a crash must not lose)."""
    with atomic_path(path, overwrite) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())


def write_text_atomic(text: str, path: PathLike, overwrite: bool = False, encoding: str = "utf-8",
                      fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", overwrite, encoding=encoding, fsync=fsync) as fh:
        fh.write(text)
    return Path(path)
