"""SemiSupSeg: segment a scan with a semi-supervised model; show the segmentation, its SDM and its uncertainty.

A thin widget over SemiSupSegLib (Qt-free, tested headless): segment_logic does the work, parameters keeps the state.
"""
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from SemiSupSegLib import bootstrap, dependencies, self_tests
from SemiSupSegLib.parameters import OVERLAY_KINDS, SegmentParameters, observe_scene_replaced
from SemiSupSegLib.results import set_foreground
from SemiSupSegLib.segment_logic import (SegmentLogic, SegmentRequest, device_note, first_overlay_id, gpu_available,
                                         model_choices, overlay_items, recommended_keep_largest, status_text)

TEST_MODEL = os.path.join(os.path.dirname(__file__), "Resources", "Testing", "hippocampus_dtc_tiny.pt")


class SemiSupSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SemiSupSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["SemiSupSeg developers"]
        self.parent.helpText = (
            "Segment a scan with a semi-supervised model (SASSNet, SB-Net, VW-Adv, SGRS-Net, baselines) in the "
            "background, and show the segmentation with its signed distance map and voxel entropy as overlays. "
            "Models: shipped, added with 'Add model file...', or best models of training runs.")
        self.parent.acknowledgementText = (
            "Sample scans: Medical Segmentation Decathlon (CC-BY-SA 4.0) and the 2018 Left Atrium Challenge. "
            "Methods: see the papers cited in the semisupseg package documentation.")


class SemiSupSegWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        widget = slicer.util.loadUI(self.resourcePath("UI/SemiSupSeg.ui"))
        self.layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        try:
            self.logic, self.job, self.loading = SemiSupSegLogic(), None, True
        except bootstrap.PackageNotFound as exc:  # says where it looked and what to do
            slicer.util.errorDisplay(str(exc))
            return
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onTimer)
        for selector in (self.ui.inputVolumeSelector, self.ui.roiSelector, self.ui.outputSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.saveParameters)
        self.overlayBoxes = (self.ui.sdmCheckBox, self.ui.entropyCheckBox, self.ui.probabilityCheckBox)  # OVERLAY_KINDS
        for box in (self.ui.keepLargestCheckBox, self.ui.show3DCheckBox) + self.overlayBoxes:
            box.connect("toggled(bool)", self.saveParameters)
        for combo in (self.ui.modelComboBox, self.ui.deviceComboBox, self.ui.qualityComboBox, self.ui.overlayComboBox):
            combo.connect("currentIndexChanged(int)", self.saveParameters)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.refreshOverlays)
        self.ui.overlayComboBox.connect("currentIndexChanged(int)", self.showOverlay)
        self.ui.opacitySlider.connect("valueChanged(double)", self.showOverlay)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.addModelButton.connect("clicked()", self.onAddModel)
        self.ui.segmentButton.connect("clicked()", self.onSegment)
        self.stopObservingScene = observe_scene_replaced(slicer.mrmlScene, self.onSceneReplaced)
        self.enter()

    def onSceneReplaced(self):  # a scene closed or loaded while the panel shows: show its parameters
        if self.parent.isEntered:
            self.enter()

    def enter(self):  # models added meanwhile (CLI, Training panel) and a loaded scene's parameters show
        if hasattr(self, "timer"):
            self.loading = True
            self.refreshModels()
            self.loadParameters()

    def onModelChanged(self, *unused):
        name = self.ui.modelComboBox.currentData
        if not self.loading:  # a newly chosen model brings its card's post-processing
            self.ui.keepLargestCheckBox.checked = recommended_keep_largest(self.logic.segment.catalogue, name)
        self.logic.segment.warm_up(name)  # the worker starts and loads the model before the first click

    def cleanup(self):
        if hasattr(self, "timer"):
            self.timer.stop()
            self.logic.close()
            self.stopObservingScene()

    def refreshModels(self, select=None):
        self.choices = model_choices(self.logic.segment.catalogue)
        self.ui.modelComboBox.clear()
        for label, name, _ in self.choices:
            self.ui.modelComboBox.addItem(label, name)
        if select is not None:
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(select))

    def parameters(self):
        return SegmentParameters(
            input_volume=self.ui.inputVolumeSelector.currentNode(), model=self.ui.modelComboBox.currentData or "",
            device=self.ui.deviceComboBox.currentText, quality=self.ui.qualityComboBox.currentText,
            keep_largest=self.ui.keepLargestCheckBox.checked, roi=self.ui.roiSelector.currentNode(),
            overlays=tuple(kind for kind, box in zip(OVERLAY_KINDS, self.overlayBoxes) if box.checked),
            overlay_shown=slicer.mrmlScene.GetNodeByID(self.ui.overlayComboBox.currentData or ""),
            opacity=self.ui.opacitySlider.value, show_3d=self.ui.show3DCheckBox.checked,
            output_segmentation=self.ui.outputSegmentationSelector.currentNode())

    def saveParameters(self, *unused):
        if self.loading:  # widgets being set from the node: do not write half-set state back
            return
        self.parameters().write(self.logic.getParameterNode())
        index = self.ui.modelComboBox.currentIndex
        self.ui.modelCardText.setPlainText(self.choices[index][2] if 0 <= index < len(self.choices) else "")
        self.ui.deviceNoteLabel.text = device_note(self.ui.deviceComboBox.currentText, gpu_available()) or ""

    def loadParameters(self):
        self.loading = True
        p = SegmentParameters.read(self.logic.getParameterNode())
        self.ui.inputVolumeSelector.setCurrentNode(p.input_volume)
        self.ui.roiSelector.setCurrentNode(p.roi)
        self.ui.outputSegmentationSelector.setCurrentNode(p.output_segmentation)
        self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(p.model)))
        self.ui.deviceComboBox.currentText, self.ui.qualityComboBox.currentText = p.device, p.quality
        self.ui.keepLargestCheckBox.checked, self.ui.show3DCheckBox.checked = p.keep_largest, p.show_3d
        for kind, box in zip(OVERLAY_KINDS, self.overlayBoxes):
            box.checked = kind in p.overlays
        self.ui.opacitySlider.value = p.opacity
        self.refreshOverlays()
        self.ui.overlayComboBox.setCurrentIndex(max(0, self.ui.overlayComboBox.findData(
            p.overlay_shown.GetID() if p.overlay_shown is not None else "")))
        self.loading = False
        self.saveParameters()

    def refreshOverlays(self, *unused):  # silent: only a user's choice changes what the slice views show
        combo, shown = self.ui.overlayComboBox, self.ui.overlayComboBox.currentData
        combo.blockSignals(True)
        combo.clear()
        for name, node_id in overlay_items(slicer.mrmlScene, self.ui.inputVolumeSelector.currentNode()):
            combo.addItem(name, node_id)
        combo.setCurrentIndex(max(0, combo.findData(shown or "")))
        combo.blockSignals(False)

    def showOverlay(self, *unused):  # not while the panel is set from the parameter node: views stay as they were
        if not self.loading:
            set_foreground(slicer.mrmlScene, slicer.mrmlScene.GetNodeByID(self.ui.overlayComboBox.currentData or ""),
                           self.ui.opacitySlider.value)

    def onAddModel(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Add model file", "", "Model files (*.pt)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not add the model.", waitCursor=True):
                self.refreshModels(select=self.logic.segment.catalogue.add(path).name)

    def onSegment(self):
        if self.job is not None:  # the button reads Cancel while a segmentation runs
            return self.job.cancel(block=False)
        with slicer.util.tryWithErrorDisplay("Segmentation could not start.", waitCursor=True):
            self.logic.ensureDependencies()
            self.ui.logText.clear()
            self.job = self.logic.segment.start(SegmentRequest.from_parameters(self.parameters()),
                                                on_progress=self.onProgress, on_log=self.ui.logText.appendPlainText)
            self.ui.segmentButton.text, self.ui.progressBar.value = "Cancel", 0
            self.timer.start()

    def onProgress(self, fraction, message, eta_s):
        self.ui.progressBar.value = int(100 * (fraction or 0))
        self.ui.statusLabel.text = status_text(message, eta_s)

    def onTimer(self):
        if not self.job.poll():
            return
        self.timer.stop()
        job, self.job = self.job, None
        self.ui.segmentButton.text = "Segment"
        if job.state == "done":
            self.ui.outputSegmentationSelector.setCurrentNode(job.outcome.segmentation_node)
            self.refreshOverlays()
            self.ui.overlayComboBox.setCurrentIndex(self.ui.overlayComboBox.findData(first_overlay_id(job.outcome)))
            self.showOverlay()
            self.ui.statusLabel.text = f"done in {job.outcome.seconds:.1f} s. " + " ".join(job.outcome.notes)
        else:
            self.ui.statusLabel.text = job.error if job.state == "failed" else "cancelled: the scene is unchanged"


class SemiSupSegLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of SemiSupSegLib.segment_logic.SegmentLogic (scene and module logics from the app)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        bootstrap.ensure_semisupseg()
        self.segment = SegmentLogic(slicer.mrmlScene, slicer.modules.segmentations.logic())

    def ensureDependencies(self):
        dependencies.ensure_dependencies(lambda title, text: slicer.util.confirmYesNoDisplay(text, windowTitle=title))

    def close(self):
        self.segment.close()


class SemiSupSegTest(ScriptedLoadableModuleTest):
    def setUp(self):  # also under ctest, whose unittest loader runs the test_ methods without runTest
        self_tests.set_up(self, slicer.mrmlScene)

    def runTest(self):
        self_tests.run_test(self, self.test_segment_sample_scan)

    def test_segment_sample_scan(self):
        """SemiSupSegLib.self_tests.segment_sample_scan with the bundled test model on the application's scene (also
        run headless by Testing/slicer/test_self_tests.py): names, geometry and Dice against the scan's label."""
        from SemiSupSegLib.self_tests import segment_sample_scan

        logic = SemiSupSegLogic()
        try:
            segment_sample_scan(slicer.mrmlScene, slicer.modules.segmentations.logic(), logic.segment,
                                slicer.util.loadVolume, TEST_MODEL)
        finally:
            logic.close()
        self.delayDisplay("SemiSupSeg test passed")
