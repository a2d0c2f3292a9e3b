"""semisupseg.runplot and 'semisupseg plot-run': the chart of a real short run (SGRS-Net on the bundled hippocampus
scans) — each curve drawn where its values put it, markers at the validations, the best one ringed, legends, axes
and title present — and the log reading behind it (resume, restart, a partial last line, a killed run)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.errors import InputError, OutputExistsError
from semisupseg.preview import _glyph
from semisupseg.runplot import (BACKGROUND, GRID, PALETTE, TEXT, nice_ticks, plot_run, read_run, render_run_chart,
                                smooth)

HIPPO = sample_dataset("hippocampus")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real 30-iteration SGRS run with validation every 10 iterations (~5 s)."""
    out = tmp_path_factory.mktemp("runplot") / "run"
    code = main(["train", "--no-bar", "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--method", "sgrs",
                 "--iterations", "30", "--patch-size", "16", "16", "16", "--amp", "off", "--out", str(out),
                 "--set", "model.n_filters=4", "--set", "num_threads=1", "--set", "val_every=10"])
    assert code == 0
    return out


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _write(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def _near(image, col, row, colour, radius=2) -> bool:
    """Whether ``colour`` is within ``radius`` pixels of (col, row)."""
    c, r = int(round(float(col))), int(round(float(row)))
    patch = image[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1]
    return bool(np.all(patch == np.asarray(colour, np.uint8), axis=-1).any())


def _count(image, colour) -> int:
    return int(np.all(image == np.asarray(colour, np.uint8), axis=-1).sum())


def test_reads_the_real_log(run):
    series = read_run(run)
    events = _events(run)
    its = [e for e in events if e["event"] == "iteration"]
    assert series.name == "run" and series.method == "sgrs" and series.status == "finished"
    assert series.max_iterations == 30 and series.last_iteration == 30
    assert series.iterations.tolist() == list(range(1, 31))
    assert set(series.losses) == {"loss"} | set(its[0]["losses"])  # the total and SGRS's terms
    assert np.allclose(series.losses["loss"], [e["loss"] for e in its])
    assert np.allclose(series.lr, [e["lr"] for e in its])
    assert {"region_delta", "region_omega", "region_theta", "pseudo_fg"} <= set(series.figures)
    assert "ce_sup" not in series.figures  # only the method's own figures, not every logged number
    vals = [e for e in events if e["event"] == "validation"]
    assert series.val_iterations.tolist() == [10, 20, 30]
    assert np.allclose(series.dice, [e["metrics"]["dice"] for e in vals])
    assert np.array_equal(np.isnan(series.hd95), [e["metrics"]["hd95"] is None for e in vals])
    best = max(range(len(vals)), key=lambda i: (vals[i]["metrics"]["dice"], -i))
    assert series.best == (vals[best]["iteration"], pytest.approx(vals[best]["metrics"]["dice"]))


def test_chart_draws_every_curve_where_its_values_are(run):
    series = read_run(run)
    chart = render_run_chart(series, width=1200, smoothing=5)
    img = chart.image
    assert img.dtype == np.uint8 and img.shape[1] == 1200 and img.shape[2] == 3
    assert chart.smoothing == 5 and set(chart.panels) == {"loss", "dice", "hd95", "lr", "figures"}
    it = series.iterations
    loss = chart.panels["loss"]
    names = [n for n, _ in loss.legend]
    # the smoothed total and each term, in legend order (later ones drawn over earlier ones)
    drawn = [("total", smooth(series.losses["loss"], 5))] + \
        [(k, smooth(v, 5)) for k, v in series.losses.items() if k != "loss"]
    assert names == ["total, raw"] + [n for n, _ in drawn]
    colours = dict(loss.legend)
    for n, (name, values) in enumerate(drawn):
        cols, rows = loss.to_pixel(it, values)
        later = [loss.to_pixel(it, v)[1] for _, v in drawn[n + 1:]]
        checked = 0
        for j in range(len(it)):
            if any(abs(r[j] - rows[j]) < 4 for r in later):
                continue  # drawn over by a later curve there
            assert _near(img, cols[j], rows[j], colours[name]), (name, int(it[j]))
            checked += 1
        assert checked >= 5, name
    # the raw total (faint) shows where the smoothed curves leave it uncovered
    assert _count(img, colours["total, raw"]) > 20
    # learning rate
    lr = chart.panels["lr"]
    cols, rows = lr.to_pixel(it, series.lr)
    assert all(_near(img, c, r, PALETTE[2]) for c, r in zip(cols, rows))
    # validation: a marker per validation, the best ringed, in the plot box
    dice = chart.panels["dice"]
    cols, rows = dice.to_pixel(series.val_iterations, series.dice)
    assert all(_near(img, c, r, PALETTE[0], radius=1) for c, r in zip(cols, rows))
    b_it, b_dice = series.best
    bc, br = dice.to_pixel(b_it, b_dice)
    ring = [(bc + 7 * math.cos(a), br + 7 * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 12)]
    assert all(_near(img, c, r, PALETTE[3], radius=1) for c, r in ring)
    assert dice.legend[-1] == (f"best {b_dice:.3f} at {b_it}", PALETTE[3])
    # HD95: a marker at each defined value; undefined ones (empty predictions, common in so short a run) leave a
    # gap, and a panel without any says so instead of staying empty
    hd = chart.panels["hd95"]
    x0, y0, x1, y1 = hd.box
    ok = np.isfinite(series.hd95)
    cols, rows = hd.to_pixel(series.val_iterations[ok], series.hd95[ok])
    assert all(_near(img, c, r, PALETTE[1], radius=1) for c, r in zip(cols, rows))
    note = _count(img[y0:y1, x0:x1], (60, 60, 60))  # the note's text (the axes are outside the box)
    assert (note > 200) if not ok.any() else (note == 0 and _count(img[y0:y1, x0:x1], PALETTE[1]) > 20)
    # method figures with the region letters in the legend
    fig = chart.panels["figures"]
    assert [n for n, _ in fig.legend][:3] == ["Δ region_delta", "Ω region_omega", "Θ region_theta"]
    cols, rows = fig.to_pixel(it, smooth(series.figures["region_delta"], 5))
    assert sum(_near(img, c, r, fig.legend[0][1]) for c, r in zip(cols, rows)) >= len(it) // 2
    # every panel: not blank, grid and axis tick labels left of the box, legend text in its colours
    for key, panel in chart.panels.items():
        x0, y0, x1, y1 = panel.box
        inside = img[y0:y1, x0:x1]
        assert (inside != np.asarray(BACKGROUND, np.uint8)).any(axis=-1).mean() > 0.01, key
        assert _count(inside, GRID) > 100, key
        assert _count(img[y0:y1 + 10, max(0, x0 - 60):x0 - 6], TEXT) > 30, key  # y tick labels
        assert _count(img[y1 + 6:y1 + 26, x0:x1], TEXT) > 30, key  # x tick labels
        lx0, ly0, lx1, ly1 = panel.legend_box
        legend = img[ly0:ly1, lx0:lx1]
        assert _count(legend, TEXT) > 40, key
        for name, colour in panel.legend:
            assert _count(legend, colour) > 10, (key, name)
    # the title line names the run, the method and its state
    assert chart.title.startswith("run, sgrs: iteration 30/30 (finished)")
    assert _count(img[:40], TEXT) > 300


def test_resume_drops_redone_iterations_and_a_restart_forgets_the_old_run(run, tmp_path):
    events = _events(run)
    first = [e for e in events if e.get("iteration", 0) <= 20 and e["event"] != "finished"]
    resumed = {"event": "resumed", "iteration": 10, "max_iterations": 30, "method": "sgrs"}
    again = [dict(e, loss=e["loss"] + 5.0) if e["event"] == "iteration" else e
             for e in events if e.get("iteration", 0) > 10 and e["event"] != "started"]
    log = _write(tmp_path / "events.jsonl", first + [resumed] + again)
    s = read_run(log)
    assert s.iterations.tolist() == list(range(1, 31))  # 11..20 once, from the resumed session
    orig = {e["iteration"]: e["loss"] for e in events if e["event"] == "iteration"}
    assert np.allclose(s.losses["loss"], [orig[i] + (5.0 if i > 10 else 0.0) for i in range(1, 31)])
    assert s.val_iterations.tolist() == [10, 20, 30] and s.status == "finished"
    # a new run started in the same folder: only its events count
    log = _write(tmp_path / "other.jsonl", events + events[:15])
    s = read_run(log)
    assert s.iterations.tolist() == [e["iteration"] for e in events[:15] if e["event"] == "iteration"]
    assert s.val_iterations.tolist() == [10] and s.status == "unfinished"  # a log file alone: no heartbeat to ask


def test_partial_last_line_and_a_killed_run(run, tmp_path):
    copy = tmp_path / "killed"
    shutil.copytree(run, copy)
    lines = (copy / "events.jsonl").read_text().splitlines(keepends=True)
    cut = [i for i, line in enumerate(lines) if '"iteration": 25,' in line and '"event": "iteration"' in line][0]
    (copy / "events.jsonl").write_text("".join(lines[:cut]) + lines[cut][:40])  # killed mid-line
    s = read_run(copy)
    assert s.skipped_lines == 1 and s.last_iteration == 24 and s.val_iterations.tolist() == [10, 20]
    assert s.status == "crashed"  # no final event and no live process: the heartbeat says so
    chart = render_run_chart(s)
    assert "iteration 24/30 (crashed)" in chart.title
    # the x axis still runs to the run's total: the curves stop at 24
    loss = chart.panels["loss"]
    c24, _ = loss.to_pixel(24, 0)
    x0, y0, x1, y1 = loss.box
    right = chart.image[y0:y1 - 2, int(c24) + 6:x1]
    assert right.shape[1] > 100 and all(_count(right, colour) == 0 for _, colour in loss.legend)


def test_a_run_without_any_hd95_says_so(run, tmp_path):
    events = [dict(e, metrics=dict(e["metrics"], hd95=None)) if e["event"] == "validation" else e
              for e in _events(run)]  # every validation prediction empty: HD95 undefined throughout
    chart = render_run_chart(read_run(_write(tmp_path / "empty_predictions.jsonl", events)))
    x0, y0, x1, y1 = chart.panels["hd95"].box
    box = chart.image[y0:y1, x0:x1]
    assert _count(box, PALETTE[1]) == 0 and _count(box, (60, 60, 60)) > 200  # no curve; the note instead


def test_numbers_behind_the_axes():
    assert nice_ticks(0, 0.83)[:2] == (0.0, 1.0)
    lo, hi, ticks = nice_ticks(0, 600, target=6)
    assert (lo, hi) == (0, 600) and ticks.tolist() == [0, 100, 200, 300, 400, 500, 600]
    lo, hi, ticks = nice_ticks(0.0, 0.01)
    assert hi == pytest.approx(0.01) and np.allclose(np.diff(ticks), 0.002)
    assert nice_ticks(0.01, 0.01)[0] <= 0.01 <= nice_ticks(0.01, 0.01)[1]  # a flat curve gets a range
    v = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    assert np.allclose(smooth(v, 3), [1.0, 2.0, 4.0, 5.0, 6.0])
    assert np.allclose(smooth(v, 1)[[0, 2]], [1.0, 3.0])
    assert not (_glyph("Δ") == _glyph("?")).all() and not (_glyph("Θ") == _glyph("Ω")).all()


def test_command_line(run, tmp_path, capsys):
    out = tmp_path / "chart.png"
    assert main(["plot-run", str(run), "-o", str(out), "--smooth", "3", "--width", "900"]) == 0
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(png, render_run_chart(read_run(run), width=900, smoothing=3).image)
    assert main(["plot-run", str(run), "-o", str(out)]) == 2  # never replaced without --overwrite
    assert "output exists" in capsys.readouterr().err
    assert main(["plot-run", str(run / "events.jsonl"), "-o", str(out), "--overwrite", "--title", "x"]) == 0
    assert main(["plot-run", str(tmp_path / "nothing"), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "no events log" in err and not (tmp_path / "c.png").exists()
    with pytest.raises(InputError, match="PNG"):
        plot_run(run, tmp_path / "chart.jpg")
    with pytest.raises(OutputExistsError):
        plot_run(run, out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "events.jsonl").write_text('{"event": "start')
    with pytest.raises(InputError, match="no training event"):
        read_run(tmp_path / "empty")
