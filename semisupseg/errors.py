"""Exception types raised by the package. Every user-facing error names the file and the problem."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


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
