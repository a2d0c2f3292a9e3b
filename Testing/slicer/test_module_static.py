"""Static checks of the SemiSupSeg module (the Slicer application cannot run here): the .ui has every widget the
module file uses, CMake installs every library and package file, the module file stays small and parses, the library
never imports Qt, the icons are what Slicer expects."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from module_checks import (check_compiles_with_python39, check_designer_xml, check_icon, cmake_list, module_ui_names,
                           qt_offenders, ui_root, ui_widgets)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SemiSupSeg"
MODULE_FILE = MODULE_DIR / "SemiSupSeg.py"
LIB = MODULE_DIR / "SemiSupSegLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SemiSupSeg.ui"
PACKAGE = REPO / "src" / "semisupseg"
#: Qt widget classes the .ui may use without declaring them as custom widgets
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QCheckBox", "QProgressBar", "QPlainTextEdit",
              "QTextBrowser", "QTextEdit", "QSpinBox", "QDoubleSpinBox", "QLineEdit", "QToolButton", "QFrame",
              "QGroupBox", "QSlider", "QListWidget", "QTableWidget", "QTabWidget", "QRadioButton"}
MAX_MODULE_LINES = 220


def _ui():
    return ui_root(UI_FILE)


# ----------------------------------------------------------------------------------------------------------------------
# .ui and module file
# ----------------------------------------------------------------------------------------------------------------------

def test_ui_is_valid_designer_xml():
    check_designer_xml(_ui(), "SemiSupSeg", QT_CLASSES)


def test_every_widget_the_module_uses_is_in_the_ui():
    used = module_ui_names(MODULE_FILE)
    widgets = ui_widgets(UI_FILE)
    assert used, "the module file uses no self.ui widgets?"
    assert used <= set(widgets), f"missing in {UI_FILE.name}: {sorted(used - set(widgets))}"
    # the panel the issue asks for
    for name, cls in {"inputVolumeSelector": "qMRMLNodeComboBox", "modelComboBox": "QComboBox",
                      "addModelButton": "QPushButton", "modelCardText": "QTextBrowser", "deviceComboBox": "QComboBox",
                      "qualityComboBox": "QComboBox", "keepLargestCheckBox": "QCheckBox",
                      "roiSelector": "qMRMLNodeComboBox", "sdmCheckBox": "QCheckBox", "entropyCheckBox": "QCheckBox",
                      "probabilityCheckBox": "QCheckBox", "overlayComboBox": "QComboBox",
                      "opacitySlider": "ctkSliderWidget", "outputSegmentationSelector": "qMRMLNodeComboBox",
                      "segmentButton": "QPushButton", "progressBar": "QProgressBar",
                      "logText": "QPlainTextEdit"}.items():
        assert widgets.get(name) == cls, f"{name}: {widgets.get(name)} instead of {cls}"


def test_node_selectors_get_the_scene_and_the_right_node_types():
    root = _ui()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("sender") == "SemiSupSeg"}
    expected = {"inputVolumeSelector": "vtkMRMLScalarVolumeNode", "roiSelector": "vtkMRMLMarkupsROINode",
                "outputSegmentationSelector": "vtkMRMLSegmentationNode"}
    for w in root.iter("widget"):
        if w.get("class") != "qMRMLNodeComboBox":
            continue
        name = w.get("name")
        assert name in receivers, f"{name} is not connected to the scene"
        types = [s.text for p in w.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
        assert types == [expected[name]], (name, types)
    names = set(ui_widgets(UI_FILE))
    for c in root.iter("connection"):
        assert {c.findtext("sender"), c.findtext("receiver")} <= names


def test_combo_items_match_the_parameters():
    from SemiSupSegLib.parameters import DEVICES, QUALITIES

    def items(name):
        w = next(w for w in _ui().iter("widget") if w.get("name") == name)
        return tuple(i.find("property/string").text for i in w.findall("item"))

    assert items("deviceComboBox") == DEVICES
    assert items("qualityComboBox") == QUALITIES


def test_module_file_parses_stays_small_and_has_the_four_classes():
    text = MODULE_FILE.read_text()
    tree = ast.parse(text)
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULE_FILE.name} has {lines} lines: move behaviour into SemiSupSegLib"
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"SemiSupSeg", "SemiSupSegWidget", "SemiSupSegLogic", "SemiSupSegTest"} <= set(classes)
    tests = [f.name for f in classes["SemiSupSegTest"].body if isinstance(f, ast.FunctionDef)]
    assert "runTest" in tests and any(t.startswith("test_") for t in tests)
    # a scene closed or loaded while the panel shows is re-read (SemiSupSegLib.parameters.observe_scene_replaced),
    # and the observers go with the widget
    widget = ast.get_source_segment(text, classes["SemiSupSegWidget"])
    assert "observe_scene_replaced(slicer.mrmlScene, self.onSceneReplaced)" in widget
    assert re.search(r"def onSceneReplaced\(self\):.*\n\s+if self.parent.isEntered:\n\s+self.enter\(\)", widget)
    assert re.search(r"def cleanup\(self\):(\n\s{8,}.*)*self.stopObservingScene\(\)", widget)
    # the UI file it loads and the bundled model its self-test uses exist and are installed
    assert 'resourcePath("UI/SemiSupSeg.ui")' in text
    model = re.search(r'"Resources", "Testing", "([^"]+)"', text).group(1)
    assert (MODULE_DIR / "Resources" / "Testing" / model).is_file()


def test_library_never_imports_qt():
    offenders = []
    for path in sorted(LIB.glob("*.py")):  # dependencies.py may use slicer.app: it installs packages in Slicer
        offenders += qt_offenders(path, slicer_attributes=() if path.name == "dependencies.py" else ("app", "modules"))
    assert not offenders, offenders


def test_module_and_library_compile_with_python39():
    """Slicer 5.6 and 5.8 run Python 3.9."""
    check_compiles_with_python39([MODULE_FILE] + sorted(LIB.glob("*.py")))


# ----------------------------------------------------------------------------------------------------------------------
# CMake
# ----------------------------------------------------------------------------------------------------------------------

def test_module_cmake_lists_every_library_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"set\(MODULE_NAME SemiSupSeg\)", text)
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", "SemiSupSeg")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", "SemiSupSeg")
    on_disk = ["SemiSupSeg.py"] + [f"SemiSupSegLib/{p.name}" for p in sorted(LIB.glob("*.py"))]
    assert sorted(scripts) == sorted(on_disk), (f"not in CMake: {sorted(set(on_disk) - set(scripts))}; "
                                                f"not on disk: {sorted(set(scripts) - set(on_disk))}")
    resource_files = [str(p.relative_to(MODULE_DIR)) for p in sorted((MODULE_DIR / "Resources").rglob("*"))
                      if p.is_file() and p.suffix not in (".py", ".md")]
    assert sorted(resources) == sorted(resource_files)
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def _glob_recurse(text: str, var: str):
    """Evaluate ``file(GLOB_RECURSE var RELATIVE ${CMAKE_CURRENT_SOURCE_DIR}/src ... patterns)`` and the
    ``list(FILTER var EXCLUDE REGEX ...)`` after it, as CMake does, on the repository (paths relative to src/)."""
    match = re.search(r"file\(GLOB_RECURSE\s+" + var + r"\s+RELATIVE\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/src"
                      r"\s+CONFIGURE_DEPENDS\s+(.*?)\)", text, re.S)
    assert match, f"file(GLOB_RECURSE {var} RELATIVE .../src ...) not found"
    found = set()
    for pattern in match.group(1).split():
        rel = pattern.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")
        folder, name = rel.rsplit("/", 1)
        found |= {str(p.relative_to(REPO / "src")) for p in (REPO / folder).rglob(name) if p.is_file()}
    for regex in re.findall(r"list\(FILTER\s+" + var + r"\s+EXCLUDE\s+REGEX\s+\"(.*?)\"\)", text):
        regex = regex.replace("\\\\", "\\")
        found = {f for f in found if not re.search(regex, f)}
    return found


def test_top_cmake_installs_every_file_of_the_package():
    text = (REPO / "CMakeLists.txt").read_text()
    scripts = _glob_recurse(text, "SEMISUPSEG_PACKAGE_SCRIPTS")
    data = _glob_recurse(text, "SEMISUPSEG_PACKAGE_DATA")
    package_files = {str(p.relative_to(REPO / "src")) for p in PACKAGE.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert package_files - scripts - data == set(), "package files the extension would not install"
    assert all(f.endswith(".py") for f in scripts) and not any(f.endswith(".py") for f in data)
    assert "semisupseg/__init__.py" in scripts and "semisupseg/cli/segment.py" in scripts
    assert any(f.startswith("semisupseg/sample_data/hippocampus/imagesTr/") for f in data)
    block = re.search(r"ctkMacroCompilePythonScript\((.*?)\)", text, re.S).group(1)
    for word in ("SCRIPTS \"${SEMISUPSEG_PACKAGE_SCRIPTS}\"", "RESOURCES \"${SEMISUPSEG_PACKAGE_DATA}\"",
                 "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/src",
                 "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}",
                 "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}", "NO_INSTALL_SUBDIR"):
        assert word in block, word


def test_top_cmake_metadata_and_modules():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert "add_subdirectory(SemiSupSeg)" in text
    assert re.search(r"if\(EXISTS \$\{CMAKE_CURRENT_SOURCE_DIR\}/SemiSupSegTraining/CMakeLists.txt\)\s*"
                     r"add_subdirectory\(SemiSupSegTraining\)", text)
    for var in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        urls = re.search(r'set\(' + var + r' "(.*?)"\)', text).group(1).split()
        for url in urls:
            rel = url.split("/main/", 1)[1]
            assert rel.startswith("Resources/") and (REPO / rel).is_file(), url
        if var == "EXTENSION_ICONURL":
            assert len(urls) == 1


def test_icons_are_128_pixel_rgba_pngs():
    for path in (REPO / "Resources" / "Icons" / "SemiSupSeg.png", MODULE_DIR / "Resources" / "Icons" / "SemiSupSeg.png"):
        check_icon(path)


@pytest.mark.parametrize("module_file", [REPO / "SemiSupSeg" / "SemiSupSeg.py",
                                         REPO / "SemiSupSegTraining" / "SemiSupSegTraining.py"])
def test_signals_are_connected_to_python_functions(module_file, tmp_path):
    """A signal connected straight to a Qt slot gets all of the signal's arguments (PythonQt trims them only for
    Python functions): the run-folder field once started its timer with the path, which failed in Slicer only."""
    from module_checks import connect_target_problems

    assert connect_target_problems(module_file) == []
    bad = tmp_path / "bad.py"
    bad.write_text("class W:\n    def setup(self):\n        self.edit.connect('currentPathChanged(QString)', "
                   "self.timer.start)\n        self.box.connect('toggled(bool)', self.setup)\n")
    assert connect_target_problems(bad) == ["line 3: self.timer.start"]
