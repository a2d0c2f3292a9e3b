"""Static checks of the SemiSupSegTraining module (the Slicer application cannot run here): every widget the module
file uses exists in its .ui with the expected class, CMake installs every file of the module, the module file parses
and has the four classes, finds the shared library both in an installed extension and in a source checkout, the
library files it adds never import Qt, the icon is what Slicer expects."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from module_checks import (check_compiles_with_python39, check_designer_xml, check_icon, cmake_list, module_ui_names,
                           qt_offenders, ui_root, ui_widgets)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SemiSupSegTraining"
MODULE_FILE = MODULE_DIR / "SemiSupSegTraining.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SemiSupSegTraining.ui"
LIB = REPO / "SemiSupSeg" / "SemiSupSegLib"
LIB_FILES = ("training_logic.py", "labeled_set.py", "method_form.py")
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QCheckBox", "QProgressBar", "QPlainTextEdit",
              "QSpinBox", "QLineEdit", "QListWidget", "QTableWidget", "QGroupBox"}
#: the panel issue 11 asks for: widget -> class
PANEL = {"labeledPathLineEdit": "ctkPathLineEdit", "labelsPathLineEdit": "ctkPathLineEdit",
         "unlabeledPathLineEdit": "ctkPathLineEdit", "checkDataButton": "QPushButton", "dataCheckList": "QListWidget",
         "addVolumeSelector": "qMRMLNodeComboBox", "addSegmentationSelector": "qMRMLNodeComboBox",
         "addCaseButton": "QPushButton", "methodComboBox": "QComboBox", "methodDescriptionLabel": "QLabel",
         "iterationsSpinBox": "QSpinBox", "patchSizeLineEdit": "QLineEdit", "batchSizeSpinBox": "QSpinBox",
         "labeledBatchSizeSpinBox": "QSpinBox", "learningRateLineEdit": "QLineEdit", "validationLineEdit": "QLineEdit",
         "seedSpinBox": "QSpinBox", "deviceComboBox": "QComboBox", "runFolderPathLineEdit": "ctkPathLineEdit",
         "advancedCollapsibleButton": "ctkCollapsibleButton", "advancedFormWidget": "QWidget",
         "overlayCaseComboBox": "QComboBox", "overlayEverySpinBox": "QSpinBox", "startButton": "QPushButton",
         "cancelButton": "QPushButton", "resumeButton": "QPushButton", "progressBar": "QProgressBar",
         "statusLabel": "QLabel", "chartComboBox": "QComboBox", "plotWidget": "qMRMLPlotWidget",
         "logText": "QPlainTextEdit", "useInSegmentButton": "QPushButton", "rankButton": "QPushButton",
         "rankingTable": "QTableWidget"}


def _ui():
    return ui_root(UI_FILE)


def test_ui_is_valid_designer_xml_with_the_panel():
    root = _ui()
    check_designer_xml(root, "SemiSupSegTraining", QT_CLASSES)
    widgets = ui_widgets(UI_FILE)
    for name, cls in PANEL.items():
        assert widgets.get(name) == cls, f"{name}: {widgets.get(name)} instead of {cls}"
    # every MRML widget gets the scene
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("sender") ==
                 "SemiSupSegTraining" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert receivers == {n for n, c in widgets.items() if c in ("qMRMLNodeComboBox", "qMRMLPlotWidget")}
    types = {w.get("name"): [s.text for p in w.findall("property") if p.get("name") == "nodeTypes"
                             for s in p.iter("string")] for w in root.iter("widget")}
    assert types["addVolumeSelector"] == ["vtkMRMLScalarVolumeNode"]
    assert types["addSegmentationSelector"] == ["vtkMRMLSegmentationNode"]


def test_every_widget_the_module_and_the_panel_logic_use_is_in_the_ui():
    from SemiSupSegLib.parameters import DEVICES
    from SemiSupSegLib.training_logic import PANEL_WIDGETS, TrainingSettings

    widgets = ui_widgets(UI_FILE)
    used = module_ui_names(MODULE_FILE) | {w for _, w in PANEL_WIDGETS}
    assert len(used) > 20
    assert used <= set(widgets), f"missing in {UI_FILE.name}: {sorted(used - set(widgets))}"
    settings = set(TrainingSettings.__dataclass_fields__)
    assert {s for s, _ in PANEL_WIDGETS} <= settings
    assert settings - {s for s, _ in PANEL_WIDGETS} == {"overrides", "overwrite"}  # the Advanced form, a dialog
    combo = next(w for w in _ui().iter("widget") if w.get("name") == "deviceComboBox")
    assert tuple(i.find("property/string").text for i in combo.findall("item")) == DEVICES


def test_module_file_parses_and_has_the_four_classes_and_a_training_self_test():
    text = MODULE_FILE.read_text()
    tree = ast.parse(text)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"SemiSupSegTraining", "SemiSupSegTrainingWidget", "SemiSupSegTrainingLogic",
            "SemiSupSegTrainingTest"} <= set(classes)
    tests = [f.name for f in classes["SemiSupSegTrainingTest"].body if isinstance(f, ast.FunctionDef)]
    assert "runTest" in tests and "test_train_watch_and_segment" in tests
    body = ast.get_source_segment(text, classes["SemiSupSegTrainingTest"])
    assert "train_watch_and_segment(slicer.mrmlScene, logic.training, logic.segment" in body
    scenario = (LIB / "self_tests.py").read_text()  # run headless too, by test_self_tests.py
    for needed in ("training.start(", "session.poll()", "RunView(", "overlays.loaded", "use_in_segment(",
                   "segment_logic.segment("):
        assert needed in scenario, needed
    assert 'resourcePath("UI/SemiSupSegTraining.ui")' in text
    assert len(text.splitlines()) <= 340, "the module file grows: move behaviour into SemiSupSegLib"


def _find_library():
    """``find_library`` of the module file, run without Qt or Slicer (it needs only os and sys)."""
    tree = ast.parse(MODULE_FILE.read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "find_library")
    namespace = {}
    module = ast.Module(body=[ast.parse("import os, sys").body[0], func], type_ignores=[])
    exec(compile(module, str(MODULE_FILE), "exec"), namespace)
    return namespace["find_library"]


def test_module_finds_the_shared_library_installed_and_from_a_checkout(tmp_path, monkeypatch):
    import sys

    find_library = _find_library()
    monkeypatch.setattr(sys, "path", list(sys.path))
    # source checkout: SemiSupSegTraining/ beside SemiSupSeg/SemiSupSegLib
    assert find_library(str(MODULE_DIR)) == str(REPO / "SemiSupSeg") and str(REPO / "SemiSupSeg") in sys.path
    # installed extension: both modules and SemiSupSegLib in one qt-scripted-modules folder
    installed = tmp_path / "qt-scripted-modules"
    (installed / "SemiSupSegLib").mkdir(parents=True)
    (installed / "SemiSupSegLib" / "__init__.py").write_text("")
    assert find_library(str(installed)) == str(installed) and sys.path[0] == str(installed)
    with pytest.raises(ImportError, match="SemiSupSegLib is neither beside"):
        find_library(str(tmp_path / "elsewhere" / "SemiSupSegTraining"))


def test_cmake_installs_every_file_of_the_module():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"set\(MODULE_NAME SemiSupSegTraining\)", text)
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", "SemiSupSegTraining")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", "SemiSupSegTraining")
    assert scripts == ["SemiSupSegTraining.py"]
    on_disk = sorted(str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*")
                     if p.is_file() and p.suffix not in (".py", ".md") and "__pycache__" not in p.parts)
    assert sorted(resources) == on_disk
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    # the library files this module adds are installed with the shared library (SemiSupSeg/CMakeLists.txt)
    lib_scripts = cmake_list((REPO / "SemiSupSeg" / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS",
                             "SemiSupSeg")
    missing = [f for f in LIB_FILES + ("live.py", "runner.py") if not any(s.endswith(f"Lib/{f}") for s in lib_scripts)]
    assert not missing, f"not installed by SemiSupSeg/CMakeLists.txt: {missing}"


def test_library_files_of_the_panel_never_import_qt():
    offenders = []
    for name in LIB_FILES:
        offenders += qt_offenders(LIB / name, slicer_attributes=("app", "modules", "mrmlScene"))
    assert not offenders, offenders


def test_module_and_library_files_compile_with_python39():
    """Slicer 5.6 and 5.8 run Python 3.9."""
    check_compiles_with_python39([MODULE_FILE] + [LIB / n for n in LIB_FILES])


def test_icon_is_a_128_pixel_rgba_png_of_its_own():
    import SimpleITK as sitk

    array = check_icon(MODULE_DIR / "Resources" / "Icons" / "SemiSupSegTraining.png")
    other = REPO / "SemiSupSeg" / "Resources" / "Icons" / "SemiSupSeg.png"
    if other.is_file():
        assert (sitk.GetArrayFromImage(sitk.ReadImage(str(other))) != array).any()
