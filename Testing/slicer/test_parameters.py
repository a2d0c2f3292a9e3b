"""SemiSupSegLib.parameters: the panel's state on a real parameter node (vtkMRMLScriptedModuleNode), saved with the
scene and read back."""
from __future__ import annotations

import pytest
import slicer

from SemiSupSegLib.parameters import (DEVICES, NODE_FIELDS, OVERLAY_KINDS, QUALITIES, SegmentParameters,
                                      observe_scene_replaced, parameter_node)


def _scene_with_nodes():
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "scan segmentation")
    overlay = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan SDM")
    return scene, volume, roi, seg, overlay


def test_round_trip_on_a_parameter_node():
    scene, volume, roi, seg, overlay = _scene_with_nodes()
    node = parameter_node(scene)
    assert SegmentParameters.read(node) == SegmentParameters()  # created with the defaults
    params = SegmentParameters(input_volume=volume, model="hippocampus-dtc", device="cpu", quality="accurate",
                               keep_largest=True, roi=roi, overlays=("probability", "sdm"), overlay_shown=overlay,
                               opacity=0.35, output_segmentation=seg, show_3d=True)
    params.write(node)
    assert node.GetParameter("quality") == "accurate"
    assert node.GetParameter("overlays") == "probability,sdm"
    assert node.GetNodeReferenceID("input_volume") == volume.GetID()
    back = SegmentParameters.read(node)
    assert back == params and back.warnings == []
    assert back.input_volume is volume and back.output_segmentation is seg and back.overlay_shown is overlay
    assert isinstance(back.opacity, float) and isinstance(back.keep_largest, bool)
    # clearing a node field removes the reference
    SegmentParameters(input_volume=volume, roi=None).write(node)
    assert SegmentParameters.read(node).roi is None and node.GetNodeReferenceID("roi") is None


def test_parameter_node_is_a_singleton_of_the_module():
    scene = slicer.vtkMRMLScene()
    first = parameter_node(scene)
    assert parameter_node(scene) is first
    assert first.GetSingletonTag() == "SemiSupSeg" and first.GetModuleName() == "SemiSupSeg"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_saved_with_the_scene(tmp_path):
    """Written to an .mrml file and loaded into a new scene, the parameters come back, node references included
    (the nodes are found by reference, not by a string that could go stale)."""
    scene, volume, roi, seg, overlay = _scene_with_nodes()
    params = SegmentParameters(input_volume=volume, model="my model.pt", quality="accurate", roi=roi,
                               output_segmentation=seg, overlay_shown=overlay, overlays=("entropy",), opacity=0.8)
    params.write(parameter_node(scene))
    path = tmp_path / "scene.mrml"
    scene.SetURL(str(path))
    assert scene.Commit()
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(path))
    assert loaded.Connect()
    back = SegmentParameters.read(parameter_node(loaded))
    assert back.model == "my model.pt" and back.quality == "accurate" and back.overlays == ("entropy",)
    assert back.opacity == 0.8
    assert back.input_volume.GetName() == "scan" and back.roi.GetName() == "box"
    assert back.output_segmentation.GetName() == "scan segmentation" and back.overlay_shown.GetName() == "scan SDM"
    assert back.input_volume.GetScene() is loaded


def test_a_closed_or_loaded_scene_is_signalled_and_its_parameters_read(tmp_path):
    """The panel re-reads its parameters after File > Close Scene (the defaults again) and after a scene file is
    loaded while it is shown (that scene's values, nodes included); until removed, and only then, it is told."""
    scene, volume, roi, seg, overlay = _scene_with_nodes()
    SegmentParameters(input_volume=volume, model="saved.pt", opacity=0.8, overlays=("entropy",)).write(
        parameter_node(scene))
    path = tmp_path / "scene.mrml"
    scene.SetURL(str(path))
    assert scene.Commit()

    shown = slicer.vtkMRMLScene()
    SegmentParameters(model="other.pt").write(parameter_node(shown))
    seen = []
    remove = observe_scene_replaced(shown, lambda: seen.append(SegmentParameters.read(parameter_node(shown))))
    shown.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded meanwhile")  # an ordinary change: no call
    assert seen == []
    shown.Clear(0)  # File > Close Scene
    assert [p.model for p in seen] == [""] and seen[0].input_volume is None
    shown.SetURL(str(path))
    assert shown.Import()  # File > Load Scene (added to the current scene)
    assert len(seen) == 2
    assert seen[1].model == "saved.pt" and seen[1].opacity == 0.8 and seen[1].overlays == ("entropy",)
    assert seen[1].input_volume.GetName() == "scan" and seen[1].input_volume.GetScene() is shown
    remove()
    shown.Clear(0)
    assert len(seen) == 2


def test_unusable_stored_values_fall_back_to_defaults_with_warnings():
    scene = slicer.vtkMRMLScene()
    node = parameter_node(scene)
    node.SetParameter("quality", "ultra")          # written by some other version
    node.SetParameter("device", "tpu")
    node.SetParameter("opacity", "1.7")
    node.SetParameter("overlays", "sdm,regions")
    node.SetParameter("keep_largest", "maybe")
    node.SetParameter("model", "kept")
    back = SegmentParameters.read(node)
    default = SegmentParameters()
    assert (back.quality, back.device, back.opacity, back.overlays, back.keep_largest) == (
        default.quality, default.device, default.opacity, default.overlays, default.keep_largest)
    assert back.model == "kept"
    assert len(back.warnings) == 5
    assert any("quality='ultra'" in w for w in back.warnings)
    node.SetParameter("opacity", "not a number")
    assert any("opacity" in w for w in SegmentParameters.read(node).warnings)


def test_missing_parameters_get_defaults():
    node = slicer.vtkMRMLScriptedModuleNode()  # not in a scene, nothing stored
    assert SegmentParameters.read(node) == SegmentParameters()


@pytest.mark.parametrize("kwargs, word", [({"quality": "best"}, "quality"), ({"device": "gpu"}, "device"),
                                           ({"opacity": -0.1}, "opacity"), ({"overlays": ("sdm", "x")}, "overlays")])
def test_bad_values_are_refused_when_constructed(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SegmentParameters(**kwargs)


def test_every_field_is_stored():
    names = set(SegmentParameters().to_strings()) | set(NODE_FIELDS)
    fields = set(SegmentParameters.__dataclass_fields__) - {"warnings"}
    assert names == fields
    assert DEVICES[0] == "auto" and QUALITIES == ("default", "accurate") and "sdm" in OVERLAY_KINDS
