"""A Slicer scene without the Slicer application: ``vtkMRMLScene`` + application logic + the module logics we use.

Inside Slicer the application builds all of this (``slicer.mrmlScene``, ``slicer.app.applicationLogic()``,
``slicer.modules.<name>.logic()``). Outside it — the tests on the Qt-free ``slicer-core`` build, the script that
renders the README pictures — :func:`build_headless_slicer` does the same wiring by hand:

* a ``vtkMRMLScene`` with the default crosshair node and the slice orientation presets (as
  ``qSlicerCoreApplication::setMRMLScene`` adds them);
* a ``vtkSlicerApplicationLogic`` on that scene, its colour logic with Slicer's default colour nodes, empty
  slice / view logic collections, and set as the application logic of the 2D and 3D displayable-manager factories
  (so that slice views rendered by :mod:`SemiSupSegLib.render` find it);
* module logics registered on the application logic by their Slicer module name (``Colors``, ``Volumes``,
  ``Segmentations``, ``SubjectHierarchy``, ``Markups``, ``CropVolume``, ``Tables``, ``Plots``), each with the scene
  and the application logic set.

The application logic keeps only a weak reference to registered module logics, so :class:`HeadlessSlicer` holds
them: keep the object alive as long as the scene is used.

Files load through Slicer's own readers (storage nodes, ``vtkSlicerVolumesLogic.AddArchetypeVolume``,
``vtkSlicerSegmentationsModuleLogic.LoadSegmentationFromFile``), not through ``slicer.util.loadVolume``, which needs
the application. Headless, data nodes get no subject-hierarchy item by themselves (the application's plugin logic
makes them); :func:`SemiSupSegLib.results.ensure_sh_item` creates one where the library needs it.

Needs ``slicer-core`` (``pip install slicer-core``), never imported by the ``semisupseg`` package itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import slicer
import vtk

from semisupseg.errors import InputError
from semisupseg.io import check_header

__all__ = ["DEFAULT_LOGICS", "HeadlessSlicer", "build_headless_slicer"]

#: Slicer module name -> logic class name in ``slicer`` (``None``: the application logic's own colour logic)
DEFAULT_LOGICS: Dict[str, Optional[str]] = {
    "Colors": None,
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Markups": "vtkSlicerMarkupsLogic",
    "CropVolume": "vtkSlicerCropVolumeLogic",
    "Tables": "vtkSlicerTablesLogic",
    "Plots": "vtkSlicerPlotsLogic",
}

# AddArchetypeVolume loading options (bit-coded, see vtkSlicerVolumesLogic)
_LOAD_LABELMAP = 1
_LOAD_SINGLE_FILE = 4
_LOAD_AUTO_WINDOW_LEVEL = 8


class HeadlessSlicer:
    """A headless Slicer: ``.scene``, ``.app_logic`` and ``.logic(name)`` for the registered module logics."""

    def __init__(self, scene, app_logic, logics: Dict[str, object]):
        self.scene = scene
        self.app_logic = app_logic
        self._logics = dict(logics)  # strong references: the application logic only keeps weak ones

    @property
    def logic_names(self) -> list:
        return sorted(self._logics)

    def logic(self, name: str):
        """The module logic registered as ``name`` (Slicer module name, e.g. ``"Segmentations"``)."""
        try:
            return self._logics[name]
        except KeyError:
            raise KeyError(f"no module logic {name!r} in this headless scene; registered: "
                           f"{', '.join(self.logic_names)}") from None

    def load_volume(self, path: Union[str, Path], name: Optional[str] = None, labelmap: bool = False,
                    single_file: Optional[bool] = None):
        """Load a volume file through ``vtkSlicerVolumesLogic.AddArchetypeVolume`` (what Slicer's "Add data" does).

        ``single_file`` (default: True unless ``path`` is a DICOM slice or a folder) stops the archetype reader from
        reading numbered neighbours as one series. A DICOM folder loads its series from the first file in it.
        Returns a ``vtkMRMLScalarVolumeNode`` (``vtkMRMLLabelMapVolumeNode`` when ``labelmap``) with display nodes.
        Raises :class:`InputError` naming the file when Slicer cannot read it, or when the package's own header checks
        (:func:`semisupseg.io.check_header`) refuse it before Slicer's reader could crash on it.
        """
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            if not files:
                raise InputError("folder holds no file to load", path)
            archetype, series = files[0], True
        elif path.is_file():
            archetype, series = path, path.suffix.lower() in (".dcm", ".ima", "")
            check_header(path)  # some damaged headers crash ITK's readers (MetaImage NDims -1: SIGSEGV)
        else:
            raise InputError("no such file", path)
        if single_file is None:
            single_file = not series
        options = (_LOAD_LABELMAP if labelmap else 0) | (_LOAD_SINGLE_FILE if single_file else 0)
        options |= _LOAD_AUTO_WINDOW_LEVEL
        if name is None:
            name = path.name
            for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
                if name.lower().endswith(suffix):
                    name = name[: -len(suffix)]
                    break
        messages = slicer.vtkMRMLMessageCollection()
        node = self.logic("Volumes").AddArchetypeVolume(str(archetype), name, options, None, messages)
        if node is None or node.GetImageData() is None:
            raise InputError(f"Slicer could not read this volume{_reason(messages)}", path)
        return node

    def load_segmentation(self, path: Union[str, Path], name: Optional[str] = None):
        """Load a ``.seg.nrrd`` (or a labelmap file as a segmentation) through the Segmentations logic."""
        path = Path(path)
        if not path.is_file():
            raise InputError("no such file", path)
        node = self.logic("Segmentations").LoadSegmentationFromFile(str(path), False, name or "")
        if node is None:
            raise InputError("Slicer could not read this segmentation", path)
        return node

    def clear(self) -> None:
        """Remove every node added since the scene was built (the scene's default nodes are recreated)."""
        self.scene.Clear(0)
        _add_scene_defaults(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()


def _reason(messages) -> str:
    """One short reason from the reader messages (the readers of every volume type add one each)."""
    texts = [messages.GetNthMessageText(i) for i in range(messages.GetNumberOfMessages())]
    details = sorted({m.split("Details:", 1)[1].strip().rstrip(".") for m in texts if "Details:" in m})
    if details:
        return f" ({', '.join(details)})"
    return f" ({texts[0].splitlines()[0][:200]})" if texts else ""


def _add_scene_defaults(scene) -> None:
    """The crosshair and slice orientation presets ``qSlicerCoreApplication::setMRMLScene`` adds to every scene."""
    if scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        scene.AddNode(crosshair)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)


def build_headless_slicer(logics: Optional[Iterable[str]] = None) -> HeadlessSlicer:
    """A new scene with an application logic and the module logics named in ``logics`` (default: all of
    :data:`DEFAULT_LOGICS`). Takes about a second (the default colour nodes)."""
    names = list(DEFAULT_LOGICS) if logics is None else list(logics)
    unknown = [n for n in names if n not in DEFAULT_LOGICS]
    if unknown:
        raise ValueError(f"unknown module logic(s) {unknown}; known: {', '.join(DEFAULT_LOGICS)}")
    scene = slicer.vtkMRMLScene()
    _add_scene_defaults(scene)
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    for factory in (slicer.vtkMRMLSliceViewDisplayableManagerFactory, slicer.vtkMRMLThreeDViewDisplayableManagerFactory):
        factory.GetInstance().SetMRMLApplicationLogic(app_logic)
    registered: Dict[str, object] = {}
    for name in names:
        class_name = DEFAULT_LOGICS[name]
        if class_name is None:
            logic = color_logic
        else:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        registered[name] = logic
    return HeadlessSlicer(scene, app_logic, registered)
