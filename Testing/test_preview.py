"""semisupseg.preview and 'semisupseg preview': slices through the object with outlines, maps and colour bars,
drawn from the bundled real scans."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.errors import InputError, OutputExistsError
from semisupseg.geometry import signed_distance_map
from semisupseg.io import read_image, read_label, write_volume
from semisupseg.preview import (CLASS_COLORS, OVERLAY_KINDS, PANEL, _FONT, class_names_for, colormap,
                                draw_text, render_preview, slice_centre, text_size, wrap_text)

HIP = sample_dataset("hippocampus")
CASE = "hippocampus_023"


@pytest.fixture(scope="module")
def case():
    image = read_image(HIP / "imagesTr" / f"{CASE}.nii.gz")
    label = read_label(HIP / "labelsTr" / f"{CASE}.nii.gz", image)
    sdm = image.with_array(signed_distance_map(label.array > 0, spacing=image.spacing).astype(np.float32))
    return image, label, sdm


def _count(rgb: np.ndarray, colour) -> int:
    return int(np.all(rgb == np.asarray(colour, dtype=np.uint8), axis=-1).sum())


def test_picture_has_outlines_per_class_a_map_row_a_colour_bar_and_a_legend(case):
    image, label, sdm = case
    names = class_names_for(HIP / "labelsTr" / f"{CASE}.nii.gz")
    assert names == {0: "background", 1: "Anterior", 2: "Posterior"}  # dataset.json beside the labels
    rgb = render_preview(image, label, {"sdm": sdm}, names, title=CASE)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    first_row = rgb[: PANEL + 60]
    assert _count(first_row, CLASS_COLORS[0]) > 50 and _count(first_row, CLASS_COLORS[1]) > 50  # both classes
    second_row = rgb[PANEL + 60: 2 * PANEL + 100]
    # the SDM row: blue inside (negative), red outside, black outline; its colour bar runs red (top) to blue
    lo_col, hi_col = colormap(np.array([0.0, 1.0]), "sdm")
    r, b = second_row[..., 0].astype(int), second_row[..., 2].astype(int)
    assert _count(second_row, (0, 0, 0)) > 50 and (b > r + 60).sum() > 200 and (r > b + 60).sum() > 200
    bar_x = 10 + 3 * (PANEL + 10)
    bar = rgb[:, bar_x + 8]
    assert any(np.array_equal(px, hi_col) for px in bar) and any(np.array_equal(px, lo_col) for px in bar)
    # the legend names the classes in their outline colours
    legend = rgb[-40:]
    assert _count(legend, CLASS_COLORS[0]) > 20 and _count(legend, CLASS_COLORS[1]) > 20
    assert _count(legend, (235, 235, 235)) > 100  # its text


def test_wrap_text_fills_lines_up_to_the_width_and_cuts_only_overlong_words():
    width = text_size("x" * 10)[1]  # exactly 10 characters
    assert wrap_text("", width) == [] and wrap_text("abc", width) == ["abc"]
    assert wrap_text("aaaa bbbb cc dddddd", width) == ["aaaa bbbb", "cc dddddd"]
    assert wrap_text("aaaaaaaaaa b", width) == ["aaaaaaaaaa", "b"]  # a full line, then the next word
    assert wrap_text("x" * 23, width) == ["x" * 10, "x" * 10, "xxx"]
    assert all(text_size(line)[1] <= width for line in wrap_text("a much longer title: outline, SDM", width))


def test_a_long_title_wraps_instead_of_running_off_the_picture(case):
    """The demo's titles (case, model, what the rows show) are wider than the picture: every character is drawn,
    on more lines, and the picture grows by those lines."""
    image, label, sdm = case
    short = render_preview(image, label, {"sdm": sdm}, title=CASE)
    title = f"{CASE}, shipped-hippocampus: outline, SDM of the labels, entropy and a few more words to wrap"
    long = render_preview(image, label, {"sdm": sdm}, title=title)
    lines = wrap_text(title, long.shape[1] - 20)
    assert len(lines) >= 2 and " ".join(lines) == title
    th = text_size("A")[0]
    assert long.shape[0] == short.shape[0] + (len(lines) - 1) * (th + 4) and long.shape[1] == short.shape[1]
    text = np.all(long == np.asarray((235, 235, 235), dtype=np.uint8), axis=-1)
    head = text[: 10 + len(lines) * (th + 4)]
    rows_with_text = np.flatnonzero(head.any(axis=1))
    assert rows_with_text.max() > 10 + th  # the second line is drawn
    assert not head[:, long.shape[1] - 10:].any()  # nothing in the right margin: no character cut off


def test_slices_go_through_the_object(case):
    image, label, _ = case
    z, y, x = slice_centre(label.array != 0, label.array.shape)
    assert label.array[z, y, x] != 0  # a voxel of the object, near its centroid
    assert slice_centre(None, (10, 20, 30)) == (5, 10, 15)


def test_orientation_as_stored_does_not_change_the_picture(case):
    """A scan stored with its x axis reversed (direction -1) is drawn exactly like the LPS original."""
    image, label, _ = case
    flip = np.diag([-1.0, 1.0, 1.0])
    origin = np.asarray(image.origin) + np.asarray(image.direction) @ np.array(
        [(image.size_xyz[0] - 1) * image.spacing[0], 0, 0])

    def flipped(v):
        out = v.with_array(np.ascontiguousarray(v.array[..., ::-1]))
        out.direction = np.asarray(v.direction) @ flip
        out.origin = tuple(origin)
        return out

    a = render_preview(image, label, class_names={1: "Anterior", 2: "Posterior"})
    b = render_preview(flipped(image), flipped(label), class_names={1: "Anterior", 2: "Posterior"})
    assert np.array_equal(a, b)


def test_every_character_of_the_sample_class_names_is_in_the_font():
    for root in ("hippocampus", "la"):
        for name in class_names_for(sample_dataset(root) / "labelsTr" / "x.nii.gz").values():
            assert all(ch in _FONT for ch in name), name
    canvas = np.zeros((20, 80, 3), np.uint8)
    end = draw_text(canvas, 2, 2, "Dice 0.9")
    assert end == 2 + 8 * 12 and canvas.any() and text_size("ab") == (16, 22)


def test_cli_writes_a_png_and_keeps_what_exists(case, tmp_path, capsys):
    image, label, sdm = case
    ent = image.with_array(np.abs(sdm.array).astype(np.float32))
    write_volume(ent, tmp_path / "ent.nii.gz")
    write_volume(image.with_array(np.stack([np.clip(-sdm.array, 0, 1), np.clip(sdm.array, 0, 1)]).astype(
        np.float32)), tmp_path / "prob.nii.gz")  # a two-component map: drawn as their sum
    out = tmp_path / "fig.png"
    argv = ["preview", str(HIP / "imagesTr" / f"{CASE}.nii.gz"), "--label", str(HIP / "labelsTr" / f"{CASE}.nii.gz"),
            "--entropy", str(tmp_path / "ent.nii.gz"), "--prob", str(tmp_path / "prob.nii.gz"), "-o", str(out)]
    assert main(argv) == 0
    png = sitk.ReadImage(str(out))
    arr = sitk.GetArrayFromImage(png)
    assert png.GetNumberOfComponentsPerPixel() == 3 and arr.dtype == np.uint8 and arr.shape[0] > 2 * PANEL * 1.5
    assert main(argv) == 2 and "output exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    # a map on another grid is refused with one line
    from semisupseg.volume import Volume

    small = Volume(np.ascontiguousarray(image.array[:, :, :10]), image.spacing, image.origin, image.direction)
    write_volume(small, tmp_path / "small.nii.gz")
    assert main(["preview", str(HIP / "imagesTr" / f"{CASE}.nii.gz"), "--sdm", str(tmp_path / "small.nii.gz"),
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "not on the image's grid" in capsys.readouterr().err


def test_errors(case, tmp_path):
    image, label, _ = case
    with pytest.raises(InputError, match="unknown overlay"):
        render_preview(image, overlays={"probability": image})
    from semisupseg.preview import write_png

    with pytest.raises(InputError, match=".png"):
        write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.jpg")
    write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    with pytest.raises(OutputExistsError):
        write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    assert set(OVERLAY_KINDS) == {"sdm", "entropy", "prob"}
