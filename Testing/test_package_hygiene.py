"""Package-wide rules: no Slicer/Qt imports in the core package, Python 3.9 syntax, a working CLI entry point."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "semisupseg"
FORBIDDEN = ("slicer", "qt", "PythonQt", "ctk", "vtk", "PyQt5", "PyQt6", "PySide2", "PySide6", "mrml")


def _python_files():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"the package's files are not where this test looks ({PACKAGE})"  # never pass on none
    return files


def test_no_slicer_or_qt_imports_in_package():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}: import {name}")
    assert not offenders, "the core package must stay Qt/Slicer-free:\n" + "\n".join(offenders)


def _python39():
    """A working Python 3.9 interpreter (pyenv shims may exist without the version: check it runs)."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python")) + [shutil.which("python3.9")]
    for candidate in candidates:
        if candidate and subprocess.run([str(candidate), "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return str(candidate)
    return None


def test_package_compiles_with_python39():
    """Slicer bundles Python 3.9+: the package must at least parse and compile there (syntax, not deps)."""
    py39 = _python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    files = [str(p) for p in _python_files()]
    code = ("import sys\n"
            "bad = []\n"
            "for f in sys.argv[1:]:\n"
            "    try: compile(open(f).read(), f, 'exec')\n"
            "    except SyntaxError as e: bad.append(f'{f}:{e.lineno}: {e.msg}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([py39, "-c", code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_has_future_annotations():
    """PEP 604/585 annotations are only safe on 3.9 with postponed evaluation."""
    missing = []
    for path in _python_files():
        text = path.read_text()
        if ("|" in text or "list[" in text or "dict[" in text or "tuple[" in text) and \
                "from __future__ import annotations" not in text and text.strip():
            tree = ast.parse(text)
            if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.AnnAssign)) for n in ast.walk(tree)):
                missing.append(str(path.relative_to(PACKAGE.parent)))
    assert not missing, "add 'from __future__ import annotations' to: " + ", ".join(missing)


def test_cli_help_runs():
    result = subprocess.run([sys.executable, "-m", "semisupseg", "--help"], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    assert "semisupseg" in result.stdout


POSIX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp", "posix")


def test_no_module_level_import_of_posix_only_modules():
    """Windows has no ``resource`` (nor ``fcntl``...): a module-level import of one stopped every import of the
    training package there (train, check-data, demo, the Slicer training panel). They are imported inside the
    function that needs them, behind a guard."""
    import ast

    offenders = []
    for path in _python_files():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{path.relative_to(PACKAGE.parent)}: {n}" for n in names if n.split(".")[0] in POSIX_ONLY]
    assert offenders == []


def test_the_package_trains_where_posix_only_modules_are_missing(tmp_path):
    """Windows simulated: with ``resource`` and ``fcntl`` unimportable, the training package imports, the peak
    memory is unknown (None) rather than an error, and the demo's CPU clock falls back to ``os.times``."""
    code = ("import sys\n"
            "sys.modules['resource'] = None; sys.modules['fcntl'] = None\n"
            "import semisupseg.training, semisupseg.cli.train, semisupseg.cli.check_data, semisupseg.cli.demo\n"
            "from semisupseg.training.engine import peak_rss_mb\n"
            "from semisupseg.cli.demo import _children_cpu\n"
            "assert peak_rss_mb() is None and _children_cpu() >= 0\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_cli_output_in_a_legacy_code_page_is_escaped_not_an_error():
    """A Windows pipe or console in cp1252: a method's description (γ, λ, Ω) raised UnicodeEncodeError."""
    import os

    env = dict(os.environ, PYTHONIOENCODING="cp1252")
    result = subprocess.run([sys.executable, "-m", "semisupseg", "methods"], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"sgrs" in result.stdout
