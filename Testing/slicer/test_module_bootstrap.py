"""SemiSupSegLib.bootstrap: ``import semisupseg`` from the extension's install folder, from a source checkout, or
from the environment — and one clear message when the package is nowhere.

Each layout is built in a temporary folder (the real package linked in, the real bootstrap.py copied) and checked in
a fresh ``python -S`` (no site-packages: the editable install of the test environment cannot help), except the
"environment" case, which needs exactly that install.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from SemiSupSegLib import bootstrap

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "semisupseg"
BOOTSTRAP = REPO / "SemiSupSeg" / "SemiSupSegLib" / "bootstrap.py"

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from SemiSupSegLib.bootstrap import ensure_semisupseg, PackageNotFound
try:
    loc = ensure_semisupseg()
except PackageNotFound as exc:
    print(json.dumps({"error": str(exc)})); raise SystemExit(0)
import semisupseg
print(json.dumps({"how": loc.how, "root": str(loc.root), "file": semisupseg.__file__,
                  "first_on_path": sys.path[0]}))
"""


def _module_dir(where: Path) -> Path:
    """``where`` holding SemiSupSegLib/bootstrap.py (a copy of the real one), as a module folder does."""
    lib = where / "SemiSupSegLib"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    shutil.copy(BOOTSTRAP, lib / "bootstrap.py")
    return where


def _link_package(into: Path) -> None:
    (into / "semisupseg").symlink_to(PACKAGE, target_is_directory=True)


def _probe(module_dir: Path, isolated: bool = True) -> dict:
    cmd = [sys.executable] + (["-S"] if isolated else []) + ["-c", PROBE, str(module_dir)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(module_dir), timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_installed_next_to_the_modules(tmp_path):
    modules = _module_dir(tmp_path / "qt-scripted-modules")
    _link_package(modules)
    found = _probe(modules)
    assert found["how"] == "installed"
    assert Path(found["root"]) == modules.resolve()
    assert Path(found["file"]).parent == modules / "semisupseg"


def test_source_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    module_dir = _module_dir(checkout / "SemiSupSeg")
    (checkout / "src").mkdir()
    _link_package(checkout / "src")
    (checkout / "pyproject.toml").write_text('[project]\nname = "semisupseg"\n')
    found = _probe(module_dir)
    assert found["how"] == "checkout"
    assert Path(found["first_on_path"]) == (checkout / "src").resolve()
    assert Path(found["file"]).parent == checkout / "src" / "semisupseg"


def test_nowhere_gives_one_clear_message(tmp_path):
    checkout = tmp_path / "checkout"
    module_dir = _module_dir(checkout / "SemiSupSeg")
    _link_package(checkout)  # a package folder without pyproject.toml beside it is not a checkout
    found = _probe(module_dir)
    message = found["error"]
    assert "'semisupseg' Python package was not found" in message
    assert str(module_dir.resolve() / "semisupseg") in message
    assert str(checkout.resolve() / "pyproject.toml") in message
    assert "Reinstall the SemiSupSeg extension" in message


def test_environment_install(tmp_path):
    """No package next to the modules nor in a checkout: the one installed in Python (here: the editable install)."""
    module_dir = _module_dir(tmp_path / "modules")
    found = _probe(module_dir, isolated=False)
    assert found["how"] == "environment"
    assert Path(found["root"]) == REPO / "src"


def test_a_different_package_already_loaded_is_reported(tmp_path):
    first = _module_dir(tmp_path / "first")
    _link_package(first)
    second = _module_dir(tmp_path / "second")
    (second / "semisupseg").mkdir()
    (second / "semisupseg" / "__init__.py").write_text("__version__ = 'other'\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import semisupseg\n"
            "sys.path.insert(0, sys.argv[2]); sys.modules.pop('SemiSupSegLib', None)\n"
            "from SemiSupSegLib.bootstrap import ensure_semisupseg, PackageNotFound\n"
            "try:\n    ensure_semisupseg()\nexcept PackageNotFound as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(first), str(second)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "a different 'semisupseg' package is already loaded" in out.stdout
    assert "restart Slicer" in out.stdout


def test_this_checkout():
    location = bootstrap.find_semisupseg()
    assert location.how == "checkout" and location.root == REPO / "src"
    assert bootstrap.ensure_semisupseg() == location
    assert location.package_dir == PACKAGE


def test_bootstrap_needs_only_the_standard_library():
    import ast

    tree = ast.parse(BOOTSTRAP.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "importlib", "sys", "dataclasses", "pathlib", "typing"}, imported


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlinked_module_folder_resolves(tmp_path):
    """Slicer may be given a symlink to the checkout's module folder: the checkout is still found."""
    checkout = tmp_path / "checkout"
    module_dir = _module_dir(checkout / "SemiSupSeg")
    (checkout / "src").mkdir()
    _link_package(checkout / "src")
    (checkout / "pyproject.toml").write_text("")
    link = tmp_path / "linked-module"
    link.symlink_to(module_dir, target_is_directory=True)
    assert _probe(link)["how"] == "checkout"
