"""Exception types raised by the package. Every user-facing error names the file and the problem."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple, Union


class SemiSupSegError(Exception):
    """Base class of every error the package raises on purpose (the CLI prints these without a traceback)."""


class InputError(SemiSupSegError, ValueError):
    """Bad user input: an unreadable or inconsistent file, a wrong option value.

    ``path`` (when given) is put at the front of the message, so the user sees which file is wrong.
    """

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class CheckpointError(InputError):
    """A model file that is not a valid SemiSupSeg checkpoint (or a peer state_dict that does not fit)."""


class OutputExistsError(InputError, FileExistsError):
    """Refusing to overwrite an existing output without ``overwrite=True`` / ``--overwrite``."""


class Cancelled(SemiSupSegError):
    """Long work (inference, training) stopped because its :class:`~semisupseg.progress.CancelToken` was set."""


class BatchError(SemiSupSegError):
    """Some items of a batch failed (each reported as it happened); the others were done."""

    @classmethod
    def of(cls, failures: List[Tuple[str, str]], total: int, done: str) -> "BatchError":
        """The batch's closing error: ``failures`` ``[(case, line)]`` of ``total`` cases (the first 5 lines),
        ``done``: what became of the others (``"the others were segmented"``)."""
        return cls(f"{len(failures)} of {total} cases failed ({done}): " + "; ".join(e for _, e in failures[:5])
                   + ("; ..." if len(failures) > 5 else ""))


#: the errors a batch of cases (``segment``, ``rank``) goes on past: a file that cannot be read, a case that
#: cannot be processed; anything else (a bug, Ctrl-C) stops the batch
CASE_ERRORS = (SemiSupSegError, OSError, RuntimeError, ValueError, MemoryError)


def case_error_line(exc: BaseException, path: Union[str, Path]) -> str:
    """One line for a failed case: our errors say it themselves (they name their file); another error gets the
    case's first file (``path``) and its type in front."""
    line = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if isinstance(exc, SemiSupSegError) else f"{path}: {type(exc).__name__}: {line}"


class PeerFailed(SemiSupSegError):
    """Another process of a distributed run failed first; the message is its error (its rank and one line), which
    the process that reports the run would otherwise only know as a closed connection."""


class OutOfMemoryError(SemiSupSegError):
    """Training or inference ran out of memory (CPU RAM or GPU). The message names the options that lower the
    memory needed (patch, batch, window) and, for training, which saved state a ``--resume`` continues from."""


#: words of the RuntimeErrors by which torch reports a failed allocation (CPU allocator, CUDA, MPS)
_OOM_WORDS = ("can't allocate memory", "out of memory", "failed to allocate", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed: :class:`MemoryError` (numpy's too), torch's
    ``OutOfMemoryError`` (CUDA), or a RuntimeError such as ``DefaultCPUAllocator: can't allocate memory``."""
    if isinstance(exc, (MemoryError, OutOfMemoryError)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(w in text for w in _OOM_WORDS)
    return False


def out_of_memory_detail(exc: BaseException) -> str:
    """A short account of a failed allocation: ``could not allocate 3.1 GiB`` when torch says how much it tried,
    else the first line of the message (at most 120 characters)."""
    import re

    text = str(exc).strip()
    found = re.search(r"tried to allocate (\d+(?:\.\d+)?)\s*(bytes|[KMGT]i?B)?", text, re.IGNORECASE)
    if found:
        amount, unit = float(found.group(1)), (found.group(2) or "bytes")
        scale = {"bytes": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40, "KB": 1e3, "MB": 1e6,
                 "GB": 1e9, "TB": 1e12}.get(unit, 1)
        size = amount * scale
        for name, step in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if size >= step:
                return f"could not allocate {size / step:.1f} {name}"
        return f"could not allocate {int(size)} bytes"
    return text.splitlines()[0][:120] if text else type(exc).__name__
