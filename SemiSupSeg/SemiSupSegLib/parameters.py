"""The Segment panel's state as a typed dataclass, stored in a parameter node (saved with the scene).

:class:`SegmentParameters` maps to a ``vtkMRMLScriptedModuleNode``:

* plain values → string parameters (``model``, ``device``, ``quality``, ``keep_largest``, ``overlays``,
  ``opacity``, ``show_3d``), written with :meth:`SegmentParameters.write` and read back exactly with
  :meth:`SegmentParameters.read`;
* nodes → node references (``input_volume``, ``roi``, ``output_segmentation``, ``overlay_shown``), so they follow
  the nodes when a scene is saved and loaded (node IDs may change on import; references are remapped).

Values the panel cannot use (a quality or device this version does not know, an opacity out of [0, 1], an unknown
overlay kind) are replaced by the defaults when read, and listed in ``SegmentParameters.read(...).warnings`` — a
scene saved by another version must still open. Constructed directly, bad values raise ``ValueError``.

:func:`observe_scene_replaced` tells the panel when the node it shows is replaced (a scene closed or loaded).

The widget may use Slicer's ``parameterNodeWrapper`` where it exists; this module is what runs everywhere (and what
the tests check on a real parameter node).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Tuple

DEVICES = ("auto", "cpu", "cuda")
QUALITIES = ("default", "accurate")
#: overlay kinds the panel can make, in the order shown; names as in ``SemiSupSegLib.results.show_overlay``
OVERLAY_KINDS = ("sdm", "entropy", "probability")
#: node-reference roles of the node-valued fields
NODE_FIELDS = ("input_volume", "roi", "output_segmentation", "overlay_shown")
#: module name: the parameter node's singleton tag and ``ModuleName``
MODULE_NAME = "SemiSupSeg"


@dataclass
class SegmentParameters:
    """What the user chose in the panel.

    * ``input_volume``, ``roi``, ``output_segmentation``, ``overlay_shown``: MRML nodes or ``None``
      (a markups ROI; the segmentation to update, ``None`` = create one; the overlay volume in the foreground);
    * ``model``: catalogue name (or path) of the model, ``""`` = none chosen;
    * ``device``: one of :data:`DEVICES`; ``quality``: one of :data:`QUALITIES` (``"accurate"`` adds flip TTA);
    * ``keep_largest``: keep the largest connected component per class;
    * ``overlays``: the overlay kinds wanted, a tuple of :data:`OVERLAY_KINDS`;
    * ``opacity``: foreground opacity of the shown overlay, in [0, 1];
    * ``show_3d``: also show the segments as closed surfaces in 3D.
    """

    input_volume: Any = None
    model: str = ""
    device: str = "auto"
    quality: str = "default"
    keep_largest: bool = False
    roi: Any = None
    overlays: Tuple[str, ...] = ("sdm", "entropy")
    overlay_shown: Any = None
    opacity: float = 0.5
    output_segmentation: Any = None
    show_3d: bool = False
    warnings: List[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.overlays = tuple(self.overlays)
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    # -- parameter node ------------------------------------------------------------------------------------------
    def write(self, node) -> None:
        """Store every field in ``node`` (a ``vtkMRMLScriptedModuleNode``) in one modification event."""
        was = node.StartModify()
        try:
            node.SetModuleName(MODULE_NAME)
            for name, text in self.to_strings().items():
                node.SetParameter(name, text)
            for role in NODE_FIELDS:
                value = getattr(self, role)
                node.SetNodeReferenceID(role, value.GetID() if value is not None else None)
        finally:
            node.EndModify(was)

    @classmethod
    def read(cls, node) -> "SegmentParameters":
        """The parameters stored in ``node``; missing ones get their defaults, unusable ones too (see ``warnings``)."""
        default = cls()
        values = {}
        warnings: List[str] = []
        for name in _STRING_FIELDS:
            has = node.HasParameter(name) if hasattr(node, "HasParameter") else name in node.GetParameterNames()
            if not has:  # HasParameter: Slicer 5.2+, parameter names: any version
                continue
            text = node.GetParameter(name)
            try:
                values[name] = _parse(name, text)
            except ValueError as exc:
                warnings.append(f"parameter {name}={text!r} ignored ({exc}); using {getattr(default, name)!r}")
        for role in NODE_FIELDS:
            values[role] = node.GetNodeReference(role)
        for problem_field in _bad_fields(values):
            warnings.append(f"parameter {problem_field}={values[problem_field]!r} ignored; using "
                            f"{getattr(default, problem_field)!r}")
            values[problem_field] = getattr(default, problem_field)
        params = cls(**values)
        params.warnings = warnings
        return params

    def to_strings(self) -> dict:
        """The string parameters (node-valued fields excluded): ``{name: text}``."""
        return {name: _format(getattr(self, name)) for name in _STRING_FIELDS}


_STRING_FIELDS = tuple(f.name for f in fields(SegmentParameters) if f.name not in NODE_FIELDS and f.name != "warnings")
_BOOL_FIELDS = ("keep_largest", "show_3d")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(name: str, text: str) -> Any:
    if name in _BOOL_FIELDS:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no", ""):
            return False
        raise ValueError("not a boolean")
    if name == "opacity":
        return float(text)
    if name == "overlays":
        return tuple(k for k in text.split(",") if k)
    return text


def _bad_fields(values: dict) -> List[str]:
    bad = []
    if values.get("device", "auto") not in DEVICES:
        bad.append("device")
    if values.get("quality", "default") not in QUALITIES:
        bad.append("quality")
    if not 0.0 <= float(values.get("opacity", 0.5)) <= 1.0:
        bad.append("opacity")
    if any(k not in OVERLAY_KINDS for k in values.get("overlays", ())):
        bad.append("overlays")
    return bad


def _problems(params: SegmentParameters) -> List[str]:
    problems = []
    for name in _bad_fields({f: getattr(params, f) for f in ("device", "quality", "opacity", "overlays")}):
        allowed = {"device": DEVICES, "quality": QUALITIES, "overlays": OVERLAY_KINDS}.get(name)
        problems.append(f"{name} {getattr(params, name)!r} is not allowed"
                        + (f" (choose from {', '.join(allowed)})" if allowed else " (0 to 1)"))
    if not isinstance(params.model, str):
        problems.append("model must be a catalogue name or a path (str)")
    return problems


def parameter_node(scene, singleton_tag: str = MODULE_NAME) -> Any:
    """This module's parameter node in ``scene`` (created with the defaults when absent): a singleton
    ``vtkMRMLScriptedModuleNode`` tagged ``singleton_tag``, as ``ScriptedLoadableModuleLogic.getParameterNode``
    makes it (inside Slicer the widget uses that one)."""
    import slicer

    node = scene.GetSingletonNode(singleton_tag, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(singleton_tag)
        node.SetName(f"{MODULE_NAME} parameters")
        SegmentParameters().write(node)
        node = scene.AddNode(node)
    return node



def observe_scene_replaced(scene, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` after ``scene`` is closed (File > Close Scene) and after a scene file is imported into it
    (File > Load Scene, a dropped .mrb): either way the parameter node holds other values than the panel shows, and
    the panel re-reads it. Returns the function that removes both observers (the widget's ``cleanup``)."""
    tags = [scene.AddObserver(event, lambda *unused: callback()) for event in (scene.EndCloseEvent,
                                                                               scene.EndImportEvent)]

    def remove() -> None:
        for tag in tags:
            scene.RemoveObserver(tag)
        tags.clear()

    return remove
