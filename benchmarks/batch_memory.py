"""Batch inference over many files: continues past bad files, reports them, exits non-zero, memory stays flat.

Makes ``--files`` small images from the bundled hippocampus scans (random crops of 20-32 voxels per side, each
with its own shape, so nothing can be reused between cases), puts ``--bad`` bad files in the middle of the list (a
truncated NIfTI and a text file named ``.nii.gz``), and runs one ``semisupseg segment`` child over all of them with
the shipped hippocampus model (``--json-progress``). The child's resident memory (``VmRSS`` of
``/proc/<pid>/status``) is read each time it reports a case done or failed; ``VmHWM`` is its peak.

Usage::

    nice -n 5 python benchmarks/batch_memory.py --files 100 --bad 2 [--model MODEL] [--json results.json]

Prints the failures the command reported, its exit code, RSS after file 1, 10, 50 and the last, the growth
between file 10 and the last, and the peak.

Last result (``--files 100 --bad 2``, shipped hippocampus model, 2 busy CPU cores): exit code 2, 98 segmented and
written, the truncated NIfTI (case033) and the text file (case066) reported; RSS after file 1: 392.4 MiB, 10: 393.8
MiB, 50: 394.6 MiB, 100: 394.6 MiB; growth from file 10 to 100: +0.8 MiB; peak (VmHWM) 445.5 MiB; 123 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus" / "imagesTr"
SHIPPED = REPO / "src" / "semisupseg" / "models" / "hippocampus.pt"


def make_files(folder: Path, n: int, bad: int, seed: int = 0) -> List[Path]:
    """``n`` input paths in ``folder``: crops of the bundled scans, ``bad`` of them (spread over the middle of the
    list) bad files."""
    import numpy as np

    from semisupseg.io import read_volume, write_volume
    from semisupseg.volume import Volume

    rng = np.random.default_rng(seed)
    scans = [read_volume(p) for p in sorted(SAMPLE.glob("*.nii.gz"))]
    folder.mkdir(parents=True, exist_ok=True)
    bad_at = {int(n * (k + 1) / (bad + 1)) for k in range(bad)}
    paths: List[Path] = []
    for i in range(n):
        path = folder / f"case{i:03d}.nii.gz"
        if i in bad_at:
            if sorted(bad_at).index(i) % 2:
                path.write_text("not an image\n")
            else:  # a real file cut short
                src = scans[0].path or next(SAMPLE.glob("*.nii.gz"))
                data = Path(src).read_bytes()
                path.write_bytes(data[:len(data) // 3])
        else:
            vol = scans[i % len(scans)]
            shape = vol.shape_zyx
            size = [int(rng.integers(20, min(33, s + 1))) for s in shape]
            start = [int(rng.integers(0, s - c + 1)) for s, c in zip(shape, size)]
            crop = vol.array[tuple(slice(a, a + c) for a, c in zip(start, size))]
            origin = np.asarray(vol.origin, float) + vol.direction @ (np.asarray(start[::-1], float)
                                                                      * np.asarray(vol.spacing, float))
            write_volume(Volume(crop.copy(), vol.spacing, tuple(origin), vol.direction.copy()), path)
        paths.append(path)
    return paths


def _status(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])  # kB
    except OSError:
        pass
    return out


def run_batch(paths: List[Path], model: Path, out: Path, extra: Optional[List[str]] = None) -> Dict[str, Any]:
    """Segment ``paths`` in one child; returns its exit code, reported failures, RSS (MiB) per case and peak."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "semisupseg", "segment", *map(str, paths), "--model", str(model), "-o", str(out),
           "--json-progress", "--device", "cpu", *(extra or [])]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss: List[float] = []
    done: List[str] = []
    failed: List[Dict[str, str]] = []
    summary = None
    peak = 0
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind in ("done", "failed"):
            st = _status(proc.pid)
            rss.append(st.get("VmRSS", 0) / 1024.0)
            peak = max(peak, st.get("VmHWM", 0))
            (done.append(event["case"]) if kind == "done" else failed.append(
                {"case": event["case"], "error": event.get("error", "")}))
        elif kind == "summary":
            summary = event
            peak = max(peak, _status(proc.pid).get("VmHWM", 0))
    err = proc.stderr.read()
    proc.wait()
    return {"returncode": proc.returncode, "done": done, "failed": failed, "summary": summary,
            "rss_mb": [round(v, 1) for v in rss], "peak_mb": round(peak / 1024.0, 1), "stderr": err,
            "seconds": round(time.time() - t0, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--bad", type=int, default=2)
    ap.add_argument("--model", default=str(SHIPPED))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batch-") as tmp:
        paths = make_files(Path(tmp) / "in", a.files, a.bad, a.seed)
        res = run_batch(paths, Path(a.model), Path(tmp) / "out")
        written = len(list((Path(tmp) / "out").glob("*_label.nii.gz"))) if (Path(tmp) / "out").exists() else 0
    rss = res["rss_mb"]
    last_line = [line for line in res["stderr"].splitlines() if line.startswith("error:")]
    print(f"files {a.files} ({a.bad} bad), exit code {res['returncode']}, segmented {len(res['done'])}, "
          f"label maps written {written}, failed {len(res['failed'])}, {res['seconds']:.0f} s")
    for f in res["failed"]:
        print(f"  failed: {f['case']}: {f['error']}")
    print(f"  last line: {last_line[-1] if last_line else '(none)'}")
    marks = {k: rss[k - 1] for k in (1, 10, 50, len(rss)) if 0 < k <= len(rss)}
    print("RSS after file " + ", ".join(f"{k}: {v:.1f} MiB" for k, v in marks.items()))
    growth = rss[-1] - rss[9] if len(rss) >= 10 else float("nan")
    print(f"growth from file 10 to file {len(rss)}: {growth:+.1f} MiB; peak (VmHWM) {res['peak_mb']:.1f} MiB")
    if a.json:
        res.pop("stderr")
        res.update({"files": a.files, "bad": a.bad, "growth_10_to_last_mb": round(growth, 1), "written": written})
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
