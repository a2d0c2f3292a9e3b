"""Static checks shared by the tests of both Slicer modules (``test_module_static.py``,
``test_training_module_static.py``): the Qt Designer file, the module file's ``self.ui`` names, CMake lists, Qt-free
library files, Python 3.9 syntax, the module icons. Import with ``from module_checks import ...`` (pytest puts this
folder on ``sys.path`` for the tests in it)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import pytest

#: top-level modules the Qt-free library never imports
QT_MODULES = ("qt", "ctk", "PythonQt", "PyQt5", "PySide2")


def ui_root(ui_file: Path) -> ET.Element:
    return ET.parse(ui_file).getroot()


def ui_widgets(ui_file: Path) -> Dict[str, str]:
    """Widget name -> class of every widget in the ``.ui`` file."""
    return {w.get("name"): w.get("class") for w in ui_root(ui_file).iter("widget")}


def check_designer_xml(root: ET.Element, module_name: str, qt_classes: Set[str]) -> None:
    """A Qt Designer 4.0 file whose top widget is the module's ``qMRMLWidget``, with unique widget names, every
    non-Qt widget class declared as a custom widget and no custom widget declared in vain."""
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == root.findtext("class") == module_name
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert used - declared <= qt_classes, f"undeclared custom widgets: {used - declared - qt_classes}"
    assert declared <= used, f"declared but unused custom widgets: {declared - used}"


def module_ui_names(module_file: Path) -> Set[str]:
    """The ``X`` of every ``self.ui.X`` in the module file."""
    tree = ast.parse(module_file.read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}


def cmake_list(text: str, var: str, module_name: Optional[str] = None) -> List[str]:
    """The words of ``set(var ...)`` in a CMakeLists text, ``${MODULE_NAME}`` replaced by ``module_name``."""
    match = re.search(r"set\(\s*" + var + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({var} ...) not found"
    words = match.group(1).split()
    return [w.replace("${MODULE_NAME}", module_name) for w in words] if module_name else words


def qt_offenders(path: Path, slicer_attributes: Iterable[str] = ("app", "modules")) -> List[str]:
    """What the Python file imports of Qt (:data:`QT_MODULES`, ``slicer.app``) and which ``slicer.<attribute>`` of
    the application it reads (``slicer-core`` has neither), as ``"file: name"`` lines."""
    offenders = []
    attributes = tuple(slicer_attributes)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT_MODULES or n == "slicer.app"]
        if isinstance(node, ast.Attribute) and node.attr in attributes and isinstance(node.value, ast.Name) and \
                node.value.id == "slicer":
            offenders.append(f"{path.name}: slicer.{node.attr}")
    return offenders


def connect_target_problems(module_file: Path) -> List[str]:
    """Signal connections whose target is not a Python function (``X.connect("sig(args)", target)``): the target must
    be a lambda, a plain name, or ``self.<method>`` of a method the class defines. PythonQt trims a signal's
    arguments to fit only a Python function's signature; a Qt slot (``self.timer.start``) gets them all and fails
    (``QTimer.start("a path")`` finds no overload), in Slicer only. Returns ``"line N: target"`` strings."""
    tree = ast.parse(module_file.read_text())
    methods = {f.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body
               if isinstance(f, ast.FunctionDef)}
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
            continue
        target = node.args[1]
        ok = isinstance(target, (ast.Lambda, ast.Name)) or (
            isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
            and target.attr in methods)
        if not ok:
            problems.append(f"line {node.lineno}: {ast.unparse(target)}")
    return problems


def _python39() -> Optional[str]:
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python")) + [shutil.which("python3.9")]:
        if candidate and subprocess.run([str(candidate), "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return str(candidate)
    return None


def check_compiles_with_python39(files: Iterable[Path]) -> None:
    """Every file compiles with Python 3.9 (what Slicer 5.6 and 5.8 run); skips without a 3.9 interpreter."""
    py39 = _python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    code = ("import sys\nbad = []\nfor f in sys.argv[1:]:\n    try: compile(open(f).read(), f, 'exec')\n"
            "    except SyntaxError as e: bad.append(f'{f}:{e.lineno}: {e.msg}')\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([py39, "-c", code, *[str(f) for f in files]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def check_icon(path: Path):
    """A 128 x 128 RGBA PNG with transparent corners, an opaque middle and a picture (not a flat fill); returns its
    pixels (y, x, RGBA)."""
    import SimpleITK as sitk

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (128, 128) and image.GetNumberOfComponentsPerPixel() == 4
    array = sitk.GetArrayFromImage(image)
    assert array[..., 3].min() == 0 and array[64, 64, 3] == 255  # transparent corners, opaque middle
    assert len({tuple(p) for p in array.reshape(-1, 4)[::7]}) > 50  # a picture, not a flat fill
    return array
