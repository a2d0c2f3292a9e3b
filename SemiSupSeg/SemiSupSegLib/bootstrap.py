"""Make ``import semisupseg`` work inside Slicer, whichever way the extension reached the user.

Three layouts are recognised, in this order (the first one found wins, so the package that came with the module
files is the one they run with):

1. **installed extension**: the build installs the package's files next to the modules (``SemiSupSeg.py``,
   ``SemiSupSegLib/`` and ``semisupseg/`` side by side in the extension's ``qt-scripted-modules`` folder);
2. **source checkout**: the module folder (``<checkout>/SemiSupSeg``) was added to Slicer's module paths; the package
   is ``<checkout>/src/semisupseg`` beside ``<checkout>/pyproject.toml`` (under ``src/``: ``semisupseg/`` beside
   ``SemiSupSeg/`` would be one folder on the case-insensitive file systems of Windows and macOS);
3. **environment**: the package is installed in Slicer's Python (``pip install``), found by the import system.

:func:`ensure_semisupseg` puts the chosen folder first on ``sys.path`` and returns where the package comes from.
Child processes (``PythonSlicer -m semisupseg ...``) import the same package because ``SemiSupSegLib.runner`` puts
the folder of the imported ``semisupseg`` first on their ``PYTHONPATH`` (Slicer adds module folders to its own
``sys.path`` only, never to the environment its children inherit).

Standard library only: this module must work before anything else can be imported.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PACKAGE = "semisupseg"
#: the folder holding ``SemiSupSeg.py`` (this file is ``<module dir>/SemiSupSegLib/bootstrap.py``)
MODULE_DIR = Path(__file__).resolve().parents[1]


class PackageNotFound(ImportError):
    """The ``semisupseg`` package is in none of the places the module looks (the message says where it looked)."""


@dataclass(frozen=True)
class PackageLocation:
    """Where ``semisupseg`` comes from: ``root`` is the folder that *contains* the ``semisupseg`` package folder
    (the entry for ``sys.path`` / ``PYTHONPATH``); ``how`` is ``"installed"``, ``"checkout"`` or ``"environment"``."""

    root: Path
    how: str

    @property
    def package_dir(self) -> Path:
        return self.root / PACKAGE


def _is_package(folder: Path) -> bool:
    return (folder / PACKAGE / "__init__.py").is_file()


def find_semisupseg(module_dir: Optional[Path] = None) -> PackageLocation:
    """Locate the package for the module files in ``module_dir`` (default: this module's folder) without importing it.

    Raises :class:`PackageNotFound` naming the places it looked and how to fix it.
    """
    module_dir = Path(module_dir).resolve() if module_dir is not None else MODULE_DIR
    if _is_package(module_dir):
        return PackageLocation(module_dir, "installed")
    checkout = module_dir.parent
    if _is_package(checkout / "src") and (checkout / "pyproject.toml").is_file():
        return PackageLocation(checkout / "src", "checkout")
    spec = importlib.util.find_spec(PACKAGE) if PACKAGE not in sys.modules else sys.modules[PACKAGE].__spec__
    if spec is not None and spec.origin:
        return PackageLocation(Path(spec.origin).resolve().parents[1], "environment")
    raise PackageNotFound(
        f"the '{PACKAGE}' Python package was not found: not installed next to the module ({module_dir / PACKAGE}), "
        f"not in a source checkout ({checkout / 'src' / PACKAGE} with {checkout / 'pyproject.toml'}), and not in Slicer's "
        f"Python. Reinstall the SemiSupSeg extension, or add the 'SemiSupSeg' folder of a complete source checkout to "
        f"the module paths, or run 'PythonSlicer -m pip install <checkout>'.")


def ensure_semisupseg(module_dir: Optional[Path] = None) -> PackageLocation:
    """Make ``import semisupseg`` load the package :func:`find_semisupseg` chooses; return its location.

    The package folder's parent goes first on ``sys.path``. When a *different* ``semisupseg`` was imported earlier in
    this session (another copy of the extension, a pip install), :class:`PackageNotFound` says so instead of
    silently mixing two versions: restarting Slicer fixes it.
    """
    location = find_semisupseg(module_dir)
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and getattr(loaded, "__file__", None):
        loaded_root = Path(loaded.__file__).resolve().parents[1]
        if loaded_root != location.root.resolve():
            raise PackageNotFound(
                f"a different '{PACKAGE}' package is already loaded ({loaded_root / PACKAGE}) than the one this module "
                f"came with ({location.package_dir}); restart Slicer (and remove the other copy if it is not wanted)")
        return location
    root = str(location.root)
    if location.how != "environment" and root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    return location

