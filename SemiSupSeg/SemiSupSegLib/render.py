"""Slicer slice views rendered offscreen to images / PNG files, by Slicer's own ``vtkMRMLSliceLogic`` (background and
foreground layers blended with the foreground opacity, each through its display node and colour node, exactly as
in a slice view of the application) and its 2D displayable managers (segmentation outlines and fill).

Used for the README pictures and the rendering tests; works inside Slicer too (its own views are not touched: the
renderer uses a slice node and composite node of its own, removed afterwards).

Environment: an OpenGL context without a display. On Linux without ``DISPLAY``/``WAYLAND_DISPLAY`` the renderer uses
VTK's ``vtkEGLRenderWindow`` on Mesa's software EGL driver (Debian packages ``libegl1`` — which brings
``libegl-mesa0``, ``libgbm1``, ``libglvnd0`` — and ``libgl1-mesa-dri`` for ``swrast_dri.so``); elsewhere VTK's
default render window with offscreen rendering. No GPU is needed. When no context can be made,
:class:`RenderError` says so.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from semisupseg.fileio import atomic_path

__all__ = ["ORIENTATIONS", "RenderError", "SliceRenderer", "render_slice", "offscreen_render_window", "write_png"]

ORIENTATIONS = ("Axial", "Sagittal", "Coronal")
_LAYOUT_NAME = "SemiSupSegOffscreen"
_SLICE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D",)


class RenderError(RuntimeError):
    """No offscreen OpenGL context could be created (missing EGL/Mesa libraries, see the module docstring)."""


def offscreen_render_window(size: Tuple[int, int] = (512, 512)):
    """A render window that draws offscreen: ``vtkEGLRenderWindow`` on a Linux machine without a display (no X
    server connection is tried), VTK's default window with offscreen rendering elsewhere. Raises
    :class:`RenderError` when it cannot make an OpenGL context."""
    window = None
    headless_linux = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                               or os.environ.get("WAYLAND_DISPLAY"))
    if headless_linux and hasattr(vtk, "vtkEGLRenderWindow"):
        window = vtk.vtkEGLRenderWindow()
    if window is None:
        window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    # asked before anything initialises the window: with no usable EGL driver, initialising crashes the process
    if not window.SupportsOpenGL():
        raise RenderError(f"no offscreen OpenGL context ({window.GetClassName()}); on Debian/Ubuntu install the "
                          "packages libegl1 and libgl1-mesa-dri (Mesa's software EGL driver)")
    window.SetMultiSamples(0)  # exact colours: no edge blending between pixels
    window.SetSize(int(size[0]), int(size[1]))
    return window


@contextlib.contextmanager
def _segmentations_shown(scene, segmentation_node, fill: bool) -> Iterator[None]:
    """Show only ``segmentation_node`` in 2D (outlines; fill when ``fill``) for the time of a render; every other
    segmentation's display is restored afterwards, as is this one's."""
    saved: List[Tuple[object, Tuple[int, int, int, int]]] = []
    cls = "vtkMRMLSegmentationDisplayNode"
    try:
        for i in range(scene.GetNumberOfNodesByClass(cls)):
            d = scene.GetNthNodeByClass(i, cls)
            saved.append((d, (d.GetVisibility(), d.GetVisibility2D(), d.GetVisibility2DFill(),
                              d.GetVisibility2DOutline())))
            mine = segmentation_node is not None and d.GetDisplayableNode() is segmentation_node
            d.SetVisibility(1 if mine else 0)
            if mine:
                d.SetVisibility2D(1)
                d.SetVisibility2DOutline(1)
                d.SetVisibility2DFill(1 if fill else 0)
        yield
    finally:
        for d, (vis, vis2d, fill2d, outline2d) in saved:
            d.SetVisibility(vis)
            d.SetVisibility2D(vis2d)
            d.SetVisibility2DFill(fill2d)
            d.SetVisibility2DOutline(outline2d)


class SliceRenderer:
    """One offscreen slice view on ``scene``: ``render(...)`` returns the image as a ``(H, W, 3)`` uint8 array
    (row 0 at the top), ``xy_to_ras`` maps view pixels to RAS mm, ``close()`` removes its nodes.

    ``app_logic``: the application logic (default: the one set on the slice displayable-manager factory, which
    Slicer and :func:`SemiSupSegLib.headless.build_headless_slicer` set).
    """

    def __init__(self, scene, size: Tuple[int, int] = (512, 512), app_logic=None):
        self.scene = scene
        self.size = (int(size[0]), int(size[1]))
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        if app_logic is None:
            app_logic = factory.GetMRMLApplicationLogic()
        if app_logic is None:
            raise RenderError("no Slicer application logic: run inside Slicer or build the scene with "
                              "SemiSupSegLib.headless.build_headless_slicer()")
        factory.SetMRMLApplicationLogic(app_logic)
        for name in _SLICE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.window = offscreen_render_window(self.size)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers need one
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        self.group = slicer.vtkMRMLDisplayableManagerGroup()
        self.group.Initialize(factory, self.renderer)
        before = _node_ids(scene)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app_logic)
        self.logic.SetMRMLScene(scene)
        self.slice_node = self.logic.AddSliceNode(_unique_layout_name(scene))
        # slice, composite, slice model (+ its display and transform) nodes: removed again by close()
        self._own_nodes = [scene.GetNodeByID(i) for i in _node_ids(scene) if i not in before]
        self.composite_node = self.logic.GetSliceCompositeNode()
        self.group.SetMRMLDisplayableNode(self.slice_node)
        mapper = vtk.vtkImageMapper()  # the blended layers come out as RGBA 0..255
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.actor)
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        self._closed = False

    def render(self, background_node, foreground_node=None, foreground_opacity: float = 0.6,
               segmentation_node=None, orientation: str = "Axial", slice_offset: Optional[float] = None,
               segmentation_fill: bool = False, field_of_view: Optional[float] = None,
               view_centre: Optional[Sequence[float]] = None) -> np.ndarray:
        """Draw one slice and return it as ``(H, W, 3)`` uint8, row 0 at the top.

        The view is fitted to ``background_node`` in the RAS-aligned ``orientation``; ``slice_offset`` is the
        position of the slice plane along its normal in RAS mm (Axial: S, Sagittal: R, Coronal: A), default the
        background's centre, snapped to its nearest voxel plane. Only ``segmentation_node`` (if any) of the
        scene's segmentations is drawn, as outlines (plus fill when ``segmentation_fill``).

        Zoom: ``field_of_view`` (mm) is what the view's shorter side shows (the longer side shows more, in the
        view's aspect), instead of the whole background; ``view_centre`` (R, A, S mm) is the point put at the
        view's centre (its in-plane coordinates; the plane stays at ``slice_offset``, or at this point's height
        along the normal when ``slice_offset`` is not given).
        """
        if self._closed:
            raise RuntimeError("SliceRenderer is closed")
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        if background_node is None:
            raise ValueError("a background volume node is needed")
        if not 0.0 <= float(foreground_opacity) <= 1.0:
            raise ValueError(f"foreground_opacity must be in [0, 1], got {foreground_opacity}")
        if field_of_view is not None and not (np.isfinite(field_of_view) and float(field_of_view) > 0):
            raise ValueError(f"field_of_view must be a positive size in mm, got {field_of_view}")
        if view_centre is not None and (len(view_centre) != 3 or not np.all(np.isfinite(view_centre))):
            raise ValueError(f"view_centre must be a point (R, A, S) in mm, got {view_centre}")
        comp = self.composite_node
        comp.SetBackgroundVolumeID(background_node.GetID())
        comp.SetForegroundVolumeID(foreground_node.GetID() if foreground_node is not None else None)
        comp.SetForegroundOpacity(float(foreground_opacity))
        comp.SetLabelVolumeID(None)
        self.slice_node.SetOrientation(orientation)
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToBackground()
        if view_centre is not None:
            self.slice_node.JumpSliceByCentering(*(float(v) for v in view_centre))
        if field_of_view is not None:
            w, h = self.size
            fov = self.slice_node.GetFieldOfView()
            short = float(field_of_view)
            self.slice_node.SetFieldOfView(short * max(1.0, w / h), short * max(1.0, h / w), fov[2])
        if slice_offset is not None:
            self.logic.SetSliceOffset(float(slice_offset))
        self.logic.SnapSliceOffsetToIJK()
        self.actor.GetMapper().SetInputConnection(self.logic.GetImageDataConnection())
        with _segmentations_shown(self.scene, segmentation_node, segmentation_fill):
            if segmentation_node is not None and segmentation_node.GetDisplayNode() is None:
                segmentation_node.CreateDefaultDisplayNodes()
            self.group.RequestRender()
            self.window.Render()
            grab = vtk.vtkWindowToImageFilter()
            grab.SetInput(self.window)
            grab.SetInputBufferTypeToRGB()
            grab.ReadFrontBufferOff()
            grab.Update()
            out = grab.GetOutput()
        w, h, _ = out.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, 3)
        return np.ascontiguousarray(rgb[::-1])  # VTK's row 0 is the bottom one

    @property
    def slice_offset(self) -> float:
        """Position of the last rendered slice plane along its normal, RAS mm."""
        return float(self.logic.GetSliceOffset())

    @property
    def xy_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping a view pixel ``(x, y, 0, 1)`` (x right, y **up** from the bottom row) to RAS mm.
        Row ``r`` of the array :meth:`render` returns is ``y = H - 1 - r``."""
        return slicer.util.arrayFromVTKMatrix(self.slice_node.GetXYToRAS())

    def pixel_to_ras(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """RAS points ``(N, 3)`` of image pixels ``(rows, cols)`` of the array :meth:`render` returns (pixel
        centres: Slicer's XY coordinates are pixel centres)."""
        rows = np.asarray(rows, dtype=np.float64).ravel()
        cols = np.asarray(cols, dtype=np.float64).ravel()
        xy = np.stack([cols, self.size[1] - 1 - rows, np.zeros_like(rows), np.ones_like(rows)])
        return (self.xy_to_ras @ xy)[:3].T

    def save(self, image: np.ndarray, path: Union[str, Path], overwrite: bool = False) -> Path:
        """Write an image from :meth:`render` to a PNG file (atomic; an existing file only with ``overwrite``)."""
        return write_png(image, path, overwrite)

    def close(self) -> None:
        """Remove the nodes the renderer added (slice, composite, slice model nodes) and release the OpenGL
        context."""
        if self._closed:
            return
        self._closed = True
        self.actor.GetMapper().RemoveAllInputConnections(0)
        self.group.SetMRMLDisplayableNode(None)
        self.group = None
        self.logic.SetMRMLScene(None)
        for node in reversed(self._own_nodes):
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self._own_nodes = []
        self.window.Finalize()

    def __enter__(self) -> "SliceRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _node_ids(scene) -> List[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def _unique_layout_name(scene) -> str:
    name, n = _LAYOUT_NAME, 1
    while scene.GetSingletonNode(name, "vtkMRMLSliceNode") is not None:
        n += 1
        name = f"{_LAYOUT_NAME}{n}"
    return name


def write_png(image: np.ndarray, path: Union[str, Path], overwrite: bool = False) -> Path:
    """Write a ``(H, W, 3)`` uint8 image (row 0 at the top) to ``path`` as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W, 3|4) uint8 image, got {image.shape} {image.dtype}")
    h, w, c = image.shape
    data = vtk.vtkImageData()
    data.SetDimensions(w, h, 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(image[::-1]).reshape(-1, c), deep=1)
    data.GetPointData().SetScalars(scalars)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite, suffix=".png") as tmp:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(data)
        writer.Write()
        if writer.GetErrorCode():
            raise OSError(f"{path}: could not write the PNG (VTK error {writer.GetErrorCode()})")
    return path


def render_slice(scene, background_node, path: Union[str, Path], foreground_node=None,
                 foreground_opacity: float = 0.6, segmentation_node=None, orientation: str = "Axial",
                 slice_offset: Optional[float] = None, size: Sequence[int] = (512, 512),
                 segmentation_fill: bool = False, overwrite: bool = False, app_logic=None,
                 field_of_view: Optional[float] = None, view_centre: Optional[Sequence[float]] = None) -> Path:
    """Render one slice view of ``scene`` offscreen to the PNG file ``path`` and return the path.

    ``background_node`` (window/level and colours of its display node), ``foreground_node`` blended on top with
    ``foreground_opacity`` (voxels its display threshold leaves out, or on a transparent colour, show the
    background),
    ``segmentation_node`` drawn as outlines (``segmentation_fill``: also filled, as its display node says).
    ``orientation``: ``Axial``/``Sagittal``/``Coronal`` (RAS-aligned, as Slicer's default views); ``slice_offset``:
    plane position along the normal in RAS mm (default the background's centre); ``size``: (width, height) pixels;
    ``field_of_view`` (mm across the view's shorter side) and ``view_centre`` (RAS mm) zoom onto a region
    (:meth:`SliceRenderer.render`).
    An existing ``path`` is replaced only with ``overwrite``. The scene is left as it was.
    """
    with SliceRenderer(scene, (int(size[0]), int(size[1])), app_logic=app_logic) as renderer:
        image = renderer.render(background_node, foreground_node, foreground_opacity, segmentation_node,
                                orientation, slice_offset, segmentation_fill, field_of_view, view_centre)
        return renderer.save(image, path, overwrite=overwrite)
