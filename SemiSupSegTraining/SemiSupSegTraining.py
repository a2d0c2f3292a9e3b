"""SemiSupSegTraining: train a semi-supervised model from the panel, watch it learn, choose what to annotate next.

A thin widget over SemiSupSegLib (Qt-free, tested headless): training_logic (runs, data check, ranking), method_form
(the Advanced section), labeled_set (adding a case), live (plots, overlays).
"""
import os
import sys

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


def find_library(module_dir):
    """Put the folder holding SemiSupSegLib first on sys.path: this module's own folder in an installed extension
    (both modules share it), ../SemiSupSeg in a source checkout. Returns that folder."""
    for folder in (module_dir, os.path.join(os.path.dirname(module_dir), "SemiSupSeg")):
        if os.path.isfile(os.path.join(folder, "SemiSupSegLib", "__init__.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return folder
    raise ImportError(f"SemiSupSegLib is neither beside {module_dir} nor in ../SemiSupSeg: reinstall the SemiSupSeg "
                      "extension, or add both module folders of a complete source checkout to the module paths")


find_library(os.path.dirname(os.path.abspath(__file__)))
from SemiSupSegLib import bootstrap, dependencies, self_tests  # noqa: E402


class SemiSupSegTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SemiSupSeg Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["SemiSupSeg"]
        self.parent.contributors = ["SemiSupSeg developers"]
        self.parent.helpText = (
            "Train a segmentation model from a few labeled and many unlabeled scans (SASSNet, SB-Net, VW-Adv, "
            "SGRS-Net, baselines) in the background; watch losses, validation and the methods' own overlays (SDM, "
            "boundary ring, SGRS regions) as it learns; rank unlabeled scans to annotate next; use the model in "
            "the SemiSupSeg module.")
        self.parent.acknowledgementText = "Sample scans: Medical Segmentation Decathlon (CC-BY-SA 4.0)."


class SemiSupSegTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        widget = slicer.util.loadUI(self.resourcePath("UI/SemiSupSegTraining.ui"))
        self.layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        try:
            self.logic = SemiSupSegTrainingLogic()
        except bootstrap.PackageNotFound as exc:
            slicer.util.errorDisplay(str(exc))
            return
        from SemiSupSegLib import method_form, training_logic
        from SemiSupSegLib.live import TrainingPlots

        self.tl, self.mf = training_logic, method_form
        self.panel = training_logic.TrainingPanel(self.logic.training, slicer.mrmlScene)
        self.plotViewNode = None
        self.fields, self.editors = [], {}
        qt.QFormLayout(self.ui.advancedFormWidget)
        for kind, (title, _) in TrainingPlots.CHARTS.items():
            self.ui.chartComboBox.addItem(title, kind)
        self.ui.rankingTable.setColumnCount(3)
        self.ui.rankingTable.setHorizontalHeaderLabels(["rank", "case", "uncertainty"])
        self.fillMethods()
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.folderTimer = qt.QTimer()  # the path field changes on every keystroke: read the run once typing pauses
        self.folderTimer.setSingleShot(True)
        self.folderTimer.setInterval(400)
        self.folderTimer.connect("timeout()", self.onRunFolderChanged)
        # (a lambda: PythonQt would pass the path on to QTimer.start(int), which fails, and the run never showed)
        self.ui.runFolderPathLineEdit.connect("currentPathChanged(QString)", lambda *unused: self.folderTimer.start())
        self.ui.chartComboBox.connect("currentIndexChanged(int)", self.showChart)
        self.ui.rankingTable.connect("cellClicked(int,int)", self.onRankingClicked)
        for button, slot in ((self.ui.checkDataButton, self.onCheckData), (self.ui.addCaseButton, self.onAddCase),
                             (self.ui.startButton, self.onStart), (self.ui.cancelButton, self.onCancel),
                             (self.ui.resumeButton, self.onResume), (self.ui.useInSegmentButton, self.onUseInSegment),
                             (self.ui.rankButton, self.onRank)):
            button.connect("clicked()", slot)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneClosed)
        self.onRunFolderChanged()
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.connect("timeout()", self.onTimer)
        self.timer.start()

    def cleanup(self):  # the training runs go on; the timer, a ranking and the segmentation worker stop
        if hasattr(self, "timer"):
            self.timer.stop()
            self.folderTimer.stop()
            self.panel.close()
            self.logic.close()
        self.removeObservers()

    def onSceneClosed(self, *unused):
        self.panel.scene_closed()  # the run's nodes went with the scene; the run goes on and is drawn again
        self.plotViewNode = None

    def fillMethods(self):
        """The Method box (default sgrs) and its Advanced section; before torch is installed, a note instead."""
        choices, note = self.mf.method_choices()
        for name, description in choices:
            self.ui.methodComboBox.addItem(name, description)
        self.ui.methodComboBox.setCurrentIndex(max(0, self.ui.methodComboBox.findText("sgrs")))
        self.onMethodChanged()
        self.ui.methodDescriptionLabel.text = note or self.ui.methodDescriptionLabel.text

    def ready(self):  # install what is missing (one question); False: the form was built just now, to be reviewed
        self.logic.ensureDependencies()
        if self.ui.methodComboBox.count:
            return True
        self.fillMethods()
        self.showRunSettings()
        slicer.util.infoDisplay("The Python packages are installed. Check the method and settings, then click again.")
        return False

    def onMethodChanged(self, *unused):
        """The method's description, and the Advanced section made from its parameter dataclass."""
        if not self.ui.methodComboBox.count:  # torch not installed yet: no methods to describe
            return
        self.ui.methodDescriptionLabel.text = self.ui.methodComboBox.currentData or ""
        layout = self.ui.advancedFormWidget.layout()
        for editor in self.editors.values():
            layout.removeRow(editor)  # deletes the label and the editor
        self.fields = self.mf.method_fields(self.ui.methodComboBox.currentText) + self.mf.engine_fields()
        self.editors = {}
        for f in self.fields:
            self.editors[f.key] = self.mf.make_editor(f, qt)
            layout.addRow(f.label + ":", self.editors[f.key])

    def settings(self, require=("method", "labeled", "run_dir")):
        values = self.mf.parse_values(self.fields, {k: self.mf.editor_value(e) for k, e in self.editors.items()})
        self.mf.validate_method_params(self.ui.methodComboBox.currentText,
                                       {k: v for k, v in values.items() if k.startswith("method_params.")})
        texts = {name: self.mf.editor_value(getattr(self.ui, widget)) for name, widget in self.tl.PANEL_WIDGETS}
        return self.tl.settings_from_panel(texts, self.mf.overrides(self.fields, values), require=require)

    def onCheckData(self):
        with slicer.util.tryWithErrorDisplay("The data cannot be checked.", waitCursor=True):
            if not self.ready():
                return
            self.panel.check_data(self.settings(require=("method", "labeled")))
            self.rememberFolders()
            self.ui.dataCheckList.clear()
            self.ui.dataCheckList.addItem("checking (reading every file)...")

    def onAddCase(self):
        from SemiSupSegLib.labeled_set import add_to_labeled_set

        with slicer.util.tryWithErrorDisplay("The case was not added.", waitCursor=True):
            self.logic.ensureDependencies()  # the run's model card is read with torch
            names, values = self.tl.run_model_classes(self.ui.runFolderPathLineEdit.currentPath)
            added = add_to_labeled_set(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                       self.ui.addVolumeSelector.currentNode(),
                                       self.ui.addSegmentationSelector.currentNode(),
                                       self.ui.labeledPathLineEdit.currentPath,
                                       self.ui.labelsPathLineEdit.currentPath or None, names, values,
                                       unlabeled_dirs=self.tl.unlabeled_folders(self.ui.unlabeledPathLineEdit.currentPath))
            self.ui.dataCheckList.addItems([f"added case {added.case_id}: {added.image}, {added.label}"] + added.notes)

    def follow(self, session):
        self.panel.follow(session)
        self.ui.logText.setPlainText(session.log_text if session is not None else "")
        if session is not None:
            session.on_log = self.ui.logText.appendPlainText
            self.ui.iterationsSpinBox.value = session.max_iterations or self.ui.iterationsSpinBox.value
        self.onTimer()

    def rememberFolders(self):  # the paths' drop-down history (CTK saves it only when asked)
        for edit in (self.ui.labeledPathLineEdit, self.ui.labelsPathLineEdit, self.ui.unlabeledPathLineEdit,
                     self.ui.runFolderPathLineEdit):
            edit.addCurrentPathToHistory()

    def onRunFolderChanged(self, *unused):
        self.follow(self.panel.follow_folder(self.ui.runFolderPathLineEdit.currentPath))
        self.showRunSettings()

    def showRunSettings(self):  # a folder holding a run: the form shows its settings (Resume changes only edits)
        saved = self.ui.methodComboBox.count and self.tl.run_panel_settings(self.ui.runFolderPathLineEdit.currentPath)
        if saved:
            self.ui.methodComboBox.currentText = saved[0]["method"]  # rebuilds the Advanced section
            widgets = {name: getattr(self.ui, widget) for name, widget in self.tl.PANEL_WIDGETS}
            self.tl.show_run_settings(saved, widgets, self.fields, self.editors)

    def onStart(self):
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            if not self.ready():  # installs torch first: the import below needs it
                return
            from semisupseg.training.heartbeat import has_run_state

            settings = self.settings()
            self.rememberFolders()
            if has_run_state(settings.run_dir):
                if not slicer.util.confirmYesNoDisplay("The run folder holds a run. Start afresh, removing its "
                                                       "checkpoints, events and overlays? (No: Resume continues it.)"):
                    return
                settings.overwrite = True
            self.follow(self.logic.training.start(settings))

    def onResume(self):
        with slicer.util.tryWithErrorDisplay("Training could not resume.", waitCursor=True):
            if not self.ready():
                return
            self.follow(self.logic.training.resume(self.ui.runFolderPathLineEdit.currentPath,
                                                   settings=self.settings()))
            self.rememberFolders()

    def onCancel(self):
        if self.panel.session is not None:
            self.panel.session.cancel(grace_s=30.0)

    def onUseInSegment(self):
        with slicer.util.tryWithErrorDisplay("The model could not be registered.", waitCursor=True):
            name = self.logic.training.use_in_segment(self.ui.runFolderPathLineEdit.currentPath)
            segment_panel = getattr(slicer.modules, "SemiSupSegWidget", None)  # set by Slicer once the panel exists
            if segment_panel is not None:  # (never opened: it lists the model when it opens)
                segment_panel.refreshModels(select=name)
            slicer.util.infoDisplay(f"The model is '{name}' in SemiSupSeg's model list and in 'semisupseg models'.")

    def onRank(self):
        with slicer.util.tryWithErrorDisplay("The scans could not be ranked.", waitCursor=True):
            self.logic.ensureDependencies()
            self.panel.rank(self.ui.runFolderPathLineEdit.currentPath,
                            self.tl.unlabeled_folders(self.ui.unlabeledPathLineEdit.currentPath))
            self.ui.rankingTable.setRowCount(0)

    def onRankingClicked(self, row, column):
        """Load the scan and segment it with the run's model, its entropy in the foreground (Annotate next)."""
        with slicer.util.tryWithErrorDisplay("The scan could not be segmented.", waitCursor=True):
            self.ui.addVolumeSelector.setCurrentNode(self.panel.annotate(
                self.logic.segment, slicer.util.loadVolume, self.ui.rankingTable.item(row, 1).data(qt.Qt.UserRole),
                self.ui.runFolderPathLineEdit.currentPath))

    def onTimer(self):
        u = self.panel.tick()
        if u.check_lines is not None:
            self.ui.dataCheckList.clear()
            self.ui.dataCheckList.addItems(u.check_lines)
        if u.cases is not None:
            current = self.ui.overlayCaseComboBox.currentText
            self.ui.overlayCaseComboBox.clear()
            self.ui.overlayCaseComboBox.addItems([""] + u.cases)
            self.ui.overlayCaseComboBox.currentText = current
        for i, r in enumerate(u.ranking or []):
            self.ui.rankingTable.insertRow(i)
            for j, text in enumerate((r["rank"], r["case"], f"{float(r['score']):.3f}")):
                cell = qt.QTableWidgetItem(text)
                cell.setData(qt.Qt.UserRole, r["image"])
                self.ui.rankingTable.setItem(i, j, cell)
        if u.errors:  # a modal dialog runs an event loop: no tick may run under it
            self.timer.stop()
            for message in u.errors:
                slicer.util.errorDisplay(message)
            self.timer.start()
        if u.annotated is not None:
            from SemiSupSegLib.results import set_foreground

            self.ui.addSegmentationSelector.setCurrentNode(u.annotated.segmentation_node)
            set_foreground(slicer.mrmlScene, u.annotated.overlay_nodes.get("entropy"), 0.5)
        if u.chart_changed:
            self.showChart()
        self.ui.statusLabel.text, self.ui.progressBar.value = u.status, u.percent
        self.ui.cancelButton.enabled = u.running
        self.ui.startButton.enabled = self.ui.resumeButton.enabled = not u.running

    def showChart(self, *unused):
        chart = self.panel.chart(self.ui.chartComboBox.currentData)
        if chart is None:
            return
        if self.plotViewNode is None:
            self.plotViewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", "SemiSupSegTraining plot")
            self.ui.plotWidget.setMRMLPlotViewNode(self.plotViewNode)
        self.plotViewNode.SetPlotChartNodeID(chart.GetID())


class SemiSupSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of SemiSupSegLib.training_logic.TrainingLogic (and a SegmentLogic for Annotate next)."""

    def __init__(self, catalogue=None):
        ScriptedLoadableModuleLogic.__init__(self)
        bootstrap.ensure_semisupseg()
        from SemiSupSegLib.training_logic import TrainingLogic

        self.training = TrainingLogic(catalogue=catalogue)
        self._segment = None

    @property
    def segment(self):
        if self._segment is None:
            from SemiSupSegLib.segment_logic import SegmentLogic

            self._segment = SegmentLogic(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                         catalogue=self.training.catalogue)
        return self._segment

    def ensureDependencies(self):
        dependencies.ensure_dependencies(lambda title, text: slicer.util.confirmYesNoDisplay(text, windowTitle=title))

    def close(self):  # training runs are never stopped by closing the module
        if self._segment is not None:
            self._segment.close()


class SemiSupSegTrainingTest(ScriptedLoadableModuleTest):
    def setUp(self):  # also under ctest, whose unittest loader runs the test_ methods without runTest
        self_tests.set_up(self, slicer.mrmlScene)

    def runTest(self):
        self_tests.run_test(self, self.test_train_watch_and_segment)

    def test_train_watch_and_segment(self):
        """SemiSupSegLib.self_tests.train_watch_and_segment on the application's scene (also run headless by
        Testing/slicer/test_self_tests.py): train in the background, watch the plots and overlays, segment with it."""
        import shutil
        import tempfile

        from semisupseg.catalogue import ModelCatalogue
        from SemiSupSegLib.self_tests import train_watch_and_segment

        tmp = tempfile.mkdtemp(prefix="SemiSupSegTraining-test-")
        logic = SemiSupSegTrainingLogic(catalogue=ModelCatalogue(home=os.path.join(tmp, "home")))
        try:
            train_watch_and_segment(slicer.mrmlScene, logic.training, logic.segment, slicer.util.loadVolume, tmp,
                                    process_events=slicer.app.processEvents)
        finally:
            logic.close()
            shutil.rmtree(tmp, ignore_errors=True)
        self.delayDisplay("SemiSupSegTraining test passed")
