"""Offscreen slice rendering by Slicer's own slice logic and 2D displayable managers (VTK EGL on Mesa): a real scan
with its signed distance map as overlay and the segmentation outline, pixels checked against the volumes they show.

Colour convention (SemiSupSegLib.colors): SDM blue inside (negative), white on the boundary, red outside; the
outline in the segment's colour (pure green here, a colour no other layer of these pictures has).
"""
import os

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("slicer_core", reason="slicer-core not installed (pip install -e '.[test]')")

import vtk  # noqa: E402
from scipy import ndimage  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from semisupseg import io  # noqa: E402
from semisupseg.geometry import entropy, signed_distance_map  # noqa: E402
from SemiSupSegLib import render, results  # noqa: E402
from SemiSupSegLib import scene as sc  # noqa: E402

SIZE = (256, 256)
GREEN = (0.0, 1.0, 0.0)


@pytest.fixture
def shown(headless, test_data):
    """Real scan node, its real label (hippocampus = both classes), the SDM overlay and the segmentation."""
    image = headless.load_volume(test_data / "hippocampus_003_image.nii.gz")
    labels = io.read_label(test_data / "hippocampus_003_label.nii.gz")
    fg = labels.with_array((labels.array > 0).astype(np.uint8))
    sdm = fg.with_array(signed_distance_map(fg.array))
    overlay = results.show_overlay(headless.scene, sdm, "sdm", "SDM", reference_node=image)
    segmentation = results.show_segmentation(headless.scene, headless.logic("Segmentations"), fg,
                                             ["background", "hippocampus"], [0, 1], colors=[GREEN],
                                             reference_node=image)
    k = int(np.argmax(fg.array.sum(axis=(1, 2))))  # the axial slice with the most hippocampus
    offset = float((sc.ijk_to_ras_matrix(fg) @ [0, 0, k, 1.0])[2])
    return image, fg, sdm, overlay, segmentation, k, offset


def sample(volume, ras: np.ndarray) -> np.ndarray:
    """Nearest-voxel values of ``volume`` at RAS points (NaN outside)."""
    ijk = (np.linalg.inv(sc.ijk_to_ras_matrix(volume)) @ np.c_[ras, np.ones(len(ras))].T)[:3].T
    idx = np.round(ijk).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(volume.size_xyz)), axis=1)
    out = np.full(len(ras), np.nan)
    out[ok] = volume.array[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
    return out


def pixel_ras(renderer) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(SIZE[1]), np.arange(SIZE[0]), indexing="ij")
    return renderer.pixel_to_ras(rows, cols)


def is_outline(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 1] > 180) & (rgb[..., 0] < 90) & (rgb[..., 2] < 90)


def test_sdm_overlay_and_outline_pixels(headless, shown, tmp_path):
    image, fg, sdm, overlay, segmentation, k, offset = shown
    with render.SliceRenderer(headless.scene, SIZE) as renderer:
        rgb = renderer.render(image, overlay, 0.6, segmentation, "Axial", offset)
        assert renderer.slice_offset == pytest.approx(offset)
        ras = pixel_ras(renderer)
        renderer.save(rgb, tmp_path / "sdm.png")
    flat = rgb.reshape(-1, 3).astype(int)
    values = sample(sdm, ras)
    in_volume = ~np.isnan(values)
    assert in_volume.mean() > 0.3  # the scan fills a good part of the view
    assert flat[in_volume].std() > 20  # not blank
    assert np.all(flat[~in_volume] < 5)  # outside the scan: the view's black background
    outline = is_outline(rgb).ravel()
    inside = (values < -0.4) & ~outline
    outside = (values > 0.4) & ~outline
    assert inside.sum() > 100 and outside.sum() > 1000
    # blue where the SDM says inside, red where it says outside (opacity 0.6 over grey keeps the sign of B - R)
    assert np.mean(flat[inside, 2] > flat[inside, 0]) > 0.97
    assert np.mean(flat[outside, 0] > flat[outside, 2]) > 0.97
    assert (flat[inside, 2] - flat[inside, 0]).mean() > 40 and (flat[outside, 0] - flat[outside, 2]).mean() > 40
    # outline pixels lie on the label boundary of this slice (fg and bg voxels within one voxel), and the boundary
    # is drawn all round
    slice_fg = fg.array[k].astype(bool)
    near_fg = ndimage.binary_dilation(slice_fg, np.ones((3, 3)))
    near_bg = ndimage.binary_dilation(~slice_fg, np.ones((3, 3)), border_value=1)
    ijk = (np.linalg.inv(sc.ijk_to_ras_matrix(fg)) @ np.c_[ras[outline], np.ones(outline.sum())].T)[:3].T
    idx = np.round(ijk).astype(int)
    assert outline.sum() > 50 and np.all(idx[:, 2] == k)
    assert np.all(near_fg[idx[:, 1], idx[:, 0]] & near_bg[idx[:, 1], idx[:, 0]])
    inner_boundary = slice_fg & ~ndimage.binary_erosion(slice_fg)
    hit = np.zeros_like(slice_fg)
    hit[idx[:, 1], idx[:, 0]] = True
    hit_near = ndimage.binary_dilation(hit, np.ones((3, 3)))
    assert hit_near[inner_boundary].mean() > 0.95


def read_png(path) -> np.ndarray:
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    out = reader.GetOutput()
    w, h, _ = out.GetDimensions()
    c = out.GetNumberOfScalarComponents()
    return numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, c)[::-1]


def test_render_slice_writes_the_png_and_leaves_the_scene_as_it_was(headless, shown, tmp_path):
    image, fg, sdm, overlay, segmentation, k, offset = shown
    display = segmentation.GetDisplayNode()
    state = (display.GetVisibility(), display.GetVisibility2DFill(), display.GetVisibility2DOutline())
    nodes = headless.scene.GetNumberOfNodes()
    path = render.render_slice(headless.scene, image, tmp_path / "view.png", foreground_node=overlay,
                               foreground_opacity=0.6, segmentation_node=segmentation, slice_offset=offset,
                               size=SIZE)
    assert path == tmp_path / "view.png"
    png = read_png(path)
    assert png.shape == (SIZE[1], SIZE[0], 3)
    with render.SliceRenderer(headless.scene, SIZE) as renderer:
        assert np.array_equal(png, renderer.render(image, overlay, 0.6, segmentation, "Axial", offset))
    assert headless.scene.GetNumberOfNodes() == nodes
    assert (display.GetVisibility(), display.GetVisibility2DFill(), display.GetVisibility2DOutline()) == state
    with pytest.raises(FileExistsError):
        render.render_slice(headless.scene, image, path, size=SIZE)
    render.render_slice(headless.scene, image, path, size=SIZE, overwrite=True)
    assert not is_outline(read_png(path)).any()  # no segmentation asked: none drawn


def test_entropy_overlay_is_see_through_where_the_model_is_certain(headless, shown):
    image, fg, sdm, overlay, segmentation, k, offset = shown
    p = 1.0 / (1.0 + np.exp(12.0 * sdm.array))  # probabilities from the real SDM: uncertain only near the boundary
    h = entropy(np.stack([1.0 - p, p]), axis=0)
    heat = results.show_overlay(headless.scene, fg.with_array(h), "entropy", "entropy", reference_node=image)
    with render.SliceRenderer(headless.scene, SIZE) as renderer:
        plain = renderer.render(image, None, 0.0, None, "Axial", offset).astype(int)
        over = renderer.render(image, heat, 1.0, None, "Axial", offset).astype(int)
        ras = pixel_ras(renderer)
    diff = np.abs(over - plain).sum(axis=-1).ravel()
    values = sample(fg.with_array(h), ras)
    # below 5 % of the maximum entropy the overlay is not drawn; the slice is linearly interpolated, so look at
    # voxels whose neighbours are below it too
    see_through = 0.05 * h.max()
    far = sample(fg.with_array(ndimage.maximum_filter(h, size=3)), ras) < see_through
    assert far.sum() > 500 and np.mean(diff[far] <= 3) > 0.99
    uncertain = values > 0.5 * h.max()
    assert uncertain.sum() > 50 and np.mean(diff[uncertain] > 30) > 0.95
    for orientation in ("Sagittal", "Coronal"):
        with render.SliceRenderer(headless.scene, (128, 128)) as renderer:
            assert renderer.render(image, heat, 0.5, segmentation, orientation).std() > 10


def test_bad_arguments(headless, shown, tmp_path):
    image = shown[0]
    with render.SliceRenderer(headless.scene, (64, 64)) as renderer:
        with pytest.raises(ValueError, match="orientation"):
            renderer.render(image, orientation="Oblique")
        with pytest.raises(ValueError, match="foreground_opacity"):
            renderer.render(image, foreground_opacity=2.0)
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(image)


def test_field_of_view_zooms_onto_a_point_and_keeps_the_pictures_true(headless, shown):
    """Zoom (field_of_view + view_centre): the view shows field_of_view mm across its shorter side around the
    asked point, in a non-square view too, on the asked plane; what it draws still matches the volumes."""
    image, fg, sdm, overlay, segmentation, k, offset = shown
    size = (320, 200)
    kji = np.argwhere(fg.array[k])
    centre_ijk = [kji[:, 1].mean(), kji[:, 0].mean(), k, 1.0]
    centre = (sc.ijk_to_ras_matrix(fg) @ centre_ijk)[:3]
    fov = 20.0  # mm: the hippocampus slice (~15 mm) with a margin; the whole scan is ~35 x 50 mm
    with render.SliceRenderer(headless.scene, size) as renderer:
        whole = renderer.render(image, overlay, 0.6, segmentation, "Axial", offset)
        whole_mm = np.linalg.norm(renderer.xy_to_ras[:3, 1])
        rgb = renderer.render(image, overlay, 0.6, segmentation, "Axial", offset, field_of_view=fov,
                              view_centre=centre + [0.0, 0.0, 7.0])  # the plane stays at slice_offset
        assert renderer.slice_offset == pytest.approx(offset)
        m = renderer.xy_to_ras
        rows, cols = np.meshgrid(np.arange(size[1]), np.arange(size[0]), indexing="ij")
        ras = renderer.pixel_to_ras(rows, cols)
        # no plane asked: it goes through the point (snapped to a voxel plane)
        renderer.render(image, field_of_view=fov, view_centre=centre)
        assert renderer.slice_offset == pytest.approx(centre[2], abs=0.5 * image.GetSpacing()[2] + 1e-6)
    # square pixels of fov / 200 mm (the shorter side), so the wider side shows 320 / 200 of it
    assert np.linalg.norm(m[:3, 0]) == pytest.approx(fov / size[1], rel=1e-6)
    assert np.linalg.norm(m[:3, 1]) == pytest.approx(fov / size[1], rel=1e-6)
    assert whole_mm > 1.5 * fov / size[1]  # zoomed in from the fitted view
    mid = renderer.pixel_to_ras(np.array([(size[1] - 1) / 2]), np.array([(size[0] - 1) / 2]))[0]
    assert np.allclose(mid[:2], centre[:2], atol=fov / size[1])
    assert ras[:, 2] == pytest.approx(np.full(len(ras), offset))
    # the pixels still show the SDM's sign and the outline lies on the label boundary
    flat = rgb.reshape(-1, 3).astype(int)
    values = sample(sdm, ras)
    outline = is_outline(rgb).ravel()
    # (this SDM is normalised to [-1, 1] over the scan: near the object its outside values are small)
    inside, outside = (values < -0.1) & ~outline, (values > 0.1) & ~outline
    assert inside.sum() > 5000 and outside.sum() > 5000  # the object is large in the zoomed view
    assert np.mean(flat[inside, 2] > flat[inside, 0]) > 0.97 and np.mean(flat[outside, 0] > flat[outside, 2]) > 0.97
    near = ndimage.binary_dilation(fg.array[k].astype(bool), np.ones((3, 3))) & \
        ndimage.binary_dilation(~fg.array[k].astype(bool), np.ones((3, 3)), border_value=1)
    ijk = (np.linalg.inv(sc.ijk_to_ras_matrix(fg)) @ np.c_[ras[outline], np.ones(outline.sum())].T)[:3].T
    idx = np.round(ijk).astype(int)
    assert outline.sum() > 200 and np.all(near[idx[:, 1], idx[:, 0]])
    assert is_outline(rgb).sum() > 2 * is_outline(whole).sum()  # the same outline, drawn larger


def test_bad_zoom_arguments(headless, shown):
    image = shown[0]
    with render.SliceRenderer(headless.scene, (64, 64)) as renderer:
        with pytest.raises(ValueError, match="field_of_view"):
            renderer.render(image, field_of_view=0.0)
        with pytest.raises(ValueError, match="view_centre"):
            renderer.render(image, field_of_view=10.0, view_centre=(1.0, 2.0))
