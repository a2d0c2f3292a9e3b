"""Fuzz the readers on mutated real files: every case must end in a valid Volume (or model) or an InputError.

Seeds are real files: the bundled hippocampus scan and its label (``src/semisupseg/sample_data``), written by SimpleITK
also as uncompressed NIfTI, gzip and raw NRRD, compressed and raw MetaImage; the LA release crop ``mri_norm2.h5``
and the 12-slice DICOM series of ``Testing/data``; a small V-Net model file written by ``semisupseg.checkpoint``.
Each case applies one seeded mutation to one seed:

* ``flip``: 1-32 random bytes XOR-ed with random values (in a gzip file also *inside* the decompressed content,
  recompressed, so that the parser behind the CRC is reached);
* ``truncate``: the file cut at a random length;
* ``header``: one header field set to a hostile value (NIfTI: dim, datatype, bitpix, pixdim, vox_offset, scaling,
  qform/sform codes and parameters, magic; NRRD/MetaImage: a number of a header line set to 0, -1, NaN, Inf, 1e9,
  2^31, a word or nothing; DICOM: bytes of one slice's header; HDF5: bytes of the metadata area);

and reads it with the package's reader for that format (``read_volume`` / ``read_label`` / ``read_la_h5`` /
``read_image`` of the DICOM folder / ``checkpoint.load_model``) in a worker process (address space limited to 4
GB, one thread). Outcomes: ``volume`` (read; the Volume is checked: finite voxels and geometry), ``refused``
(:class:`~semisupseg.errors.InputError`), and the findings: ``error:<type>`` (any other exception), ``invalid``
(a Volume with NaN voxels or a bad geometry), ``timeout`` (no answer within ``--timeout`` s) and ``crash`` (the
worker died: a signal or an abort). Findings are written to ``OUT/findings.json`` with a copy of each file.

Run (the documented long run)::

    nice -n 5 python benchmarks/fuzz_readers.py --cases 5000 --seed 0 --workers 2 --out fuzz_readers_out

The test suite runs a short version (``Testing/reliability/test_inputs_fuzz.py``: 200 cases).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import random
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus"
SCAN = SAMPLE / "imagesTr" / "hippocampus_008.nii.gz"
SCAN_LABEL = SAMPLE / "labelsTr" / "hippocampus_008.nii.gz"
DICOM = REPO / "Testing" / "data" / "dicom_hippocampus_033"
H5 = REPO / "Testing" / "data" / "la_crop" / "mri_norm2.h5"

OUTCOMES_OK = ("volume", "refused")


# ---------------------------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------------------------
def make_seeds(folder: Path) -> Dict[str, Path]:
    """The real files every case starts from, ``{format name: path}`` (written into ``folder``)."""
    import SimpleITK as sitk
    import torch

    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.nets import VNet, VNetConfig

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    folder.mkdir(parents=True, exist_ok=True)
    scan = sitk.ReadImage(str(SCAN))
    seeds: Dict[str, Path] = {"nii.gz": SCAN, "label.nii.gz": SCAN_LABEL, "h5": H5, "dicom": DICOM}
    for name, fname, compress in (("nii", "scan.nii", False), ("nrrd", "scan.nrrd", True),
                                  ("nrrd-raw", "scan_raw.nrrd", False), ("mha", "scan.mha", True),
                                  ("mha-raw", "scan_raw.mha", False)):
        sitk.WriteImage(scan, str(folder / fname), compress)
        seeds[name] = folder / fname
    torch.manual_seed(0)
    net = VNet(VNetConfig(num_classes=3, n_filters=2))
    card = make_card(net, method="supervised", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(32, 32, 32),
                     class_names=["background", "anterior", "posterior"])
    seeds["pt"] = save_model(folder / "model.pt", net, card)
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------------------------
_NIFTI_FIELDS = (  # (name, offset, struct item, count) of the NIfTI-1 header
    ("dim", 40, "h", 8), ("datatype", 70, "h", 1), ("bitpix", 72, "h", 1), ("pixdim", 76, "f", 8),
    ("vox_offset", 108, "f", 1), ("scl_slope", 112, "f", 1), ("scl_inter", 116, "f", 1),
    ("qform_code", 252, "h", 1), ("sform_code", 254, "h", 1), ("quatern", 256, "f", 6), ("srow", 280, "f", 12),
    ("sizeof_hdr", 0, "i", 1), ("magic", 344, "B", 4))
_SHORTS = (0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 64, 255, 1000, 32767, -32768)
_FLOATS = (0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 1e-30, 0.5, 352.0)
_TEXT_VALUES = ("0", "-1", "nan", "inf", "1e9", "2147483648", "abc", "", "-0", "1e-300", "3.4e38")


def _flip(rng: random.Random, data: bytearray, start: int = 0, end: Optional[int] = None) -> str:
    end = len(data) if end is None else min(end, len(data))
    if end <= start:
        return "flip of an empty range"
    n = rng.randint(1, 32)
    for _ in range(n):
        i = rng.randrange(start, end)
        data[i] ^= rng.randint(1, 255)
    return f"flip {n} bytes in [{start}, {end})"


def _nifti_field(rng: random.Random, data: bytearray) -> str:
    name, offset, item, count = rng.choice(_NIFTI_FIELDS)
    k = rng.randrange(count)
    at = offset + k * struct.calcsize(item)
    if item == "h":
        value = rng.choice(_SHORTS + (rng.randint(-32768, 32767),))
    elif item == "i":
        value = rng.choice((0, -1, 540, 1 << 30, rng.randint(-2 ** 31, 2 ** 31 - 1)))
    elif item == "B":
        value = rng.randint(0, 255)
    else:
        value = rng.choice(_FLOATS + (rng.uniform(-1e6, 1e6),))
    struct.pack_into("<" + item, data, at, value)
    return f"header {name}[{k}] = {value!r}"


def _text_field(rng: random.Random, data: bytearray) -> str:
    m = re.search(rb"(ElementDataFile = [^\n]*\n)|(\n\r?\n)", bytes(data))
    end = m.end() if m else min(len(data), 1024)
    head = bytes(data[:end]).decode("latin-1")
    lines = head.split("\n")
    numeric = [i for i, line in enumerate(lines) if re.search(r"\d", line) and not line.startswith("NRRD")
               and "ElementDataFile" not in line]
    if not numeric:
        return _flip(rng, data, 0, end)
    i = rng.choice(numeric)
    tokens = list(re.finditer(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", lines[i]))
    tok = rng.choice(tokens)
    value = rng.choice(_TEXT_VALUES)
    lines[i] = lines[i][:tok.start()] + value + lines[i][tok.end():]
    new = "\n".join(lines).encode("latin-1")
    data[:] = new + bytes(data[end:])
    return f"header line {lines[i].split(':')[0].split('=')[0].strip()!r} number -> {value!r}"


def mutate(rng: random.Random, fmt: str, seed: Path, dst: Path) -> str:
    """Write one mutation of ``seed`` to ``dst`` (a file, or a folder for DICOM); returns what was done."""
    if fmt == "dicom":
        shutil.copytree(seed, dst)
        victim = rng.choice(sorted(dst.glob("*.dcm")))
        data = bytearray(victim.read_bytes())
        kind = rng.choice(("flip", "truncate", "header"))
        if kind == "truncate":
            cut = rng.randrange(0, len(data))
            victim.write_bytes(bytes(data[:cut]))
            return f"{victim.name}: truncate at {cut} of {len(data)}"
        what = _flip(rng, data, 0 if kind == "flip" else 132, len(data) if kind == "flip" else 700)
        victim.write_bytes(bytes(data))
        return f"{victim.name}: {kind} {what}"
    raw = seed.read_bytes()
    kind = rng.choice(("flip", "truncate", "header"))
    if kind == "truncate":
        cut = rng.randrange(0, len(raw))
        dst.write_bytes(raw[:cut])
        return f"truncate at {cut} of {len(raw)}"
    gz = fmt in ("nii.gz", "label.nii.gz")
    if gz and (kind == "header" or rng.random() < 0.7):  # reach the parser behind the gzip CRC
        data = bytearray(gzip.decompress(raw))
        what = _nifti_field(rng, data) if kind == "header" else _flip(rng, data)
        dst.write_bytes(gzip.compress(bytes(data), 6))
        return f"(inside gzip) {what}"
    data = bytearray(raw)
    if kind == "flip":
        what = _flip(rng, data)
    elif fmt == "nii":
        what = _nifti_field(rng, data)
    elif fmt in ("nrrd", "nrrd-raw", "mha", "mha-raw"):
        what = _text_field(rng, data)
    elif fmt == "h5":
        what = _flip(rng, data, 0, 2048)  # superblock, object headers
    else:  # model file: the zip's local headers and the pickled card near the start, the directory at the end
        what = _flip(rng, data, *rng.choice(((0, 4096), (len(data) - 2048, len(data)), (0, len(data)))))
    dst.write_bytes(bytes(data))
    return what


# ---------------------------------------------------------------------------------------------------------------
# the reading side (worker process)
# ---------------------------------------------------------------------------------------------------------------
def read_case(fmt: str, path: str) -> Tuple[str, str]:
    """Read ``path`` as ``fmt`` with the package's reader: ``("volume"|"refused"|"invalid"|"error:T", detail)``."""
    import numpy as np

    from semisupseg.errors import InputError

    try:
        if fmt == "pt":
            from semisupseg.checkpoint import load_model

            model, card = load_model(path)
            return "volume", f"model {card.arch}"
        if fmt == "h5":
            from semisupseg.io import read_la_h5

            vol, label = read_la_h5(path)
        elif fmt == "dicom":
            from semisupseg.io import read_image

            vol = read_image(path)
        elif fmt == "label.nii.gz":
            from semisupseg.io import read_label

            vol = read_label(path, num_classes=3)
        else:
            from semisupseg.io import read_volume

            vol = read_volume(path)
    except InputError as exc:
        return "refused", str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001 - this is what the fuzz looks for
        return f"error:{type(exc).__name__}", "".join(traceback.format_exception(exc))[-2000:]
    a = np.asarray(vol.array)
    bad = []
    if a.ndim != 3 or min(a.shape) < 1:
        bad.append(f"shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        bad.append("non-finite voxels")
    if not (np.all(np.isfinite(vol.spacing)) and min(vol.spacing) > 0 and np.all(np.isfinite(vol.origin))
            and np.all(np.isfinite(vol.direction)) and abs(np.linalg.det(vol.direction)) > 1e-3):
        bad.append(f"geometry spacing={vol.spacing} origin={vol.origin} det={np.linalg.det(vol.direction):.3g}")
    if bad:
        return "invalid", "; ".join(bad)
    return "volume", f"{a.shape} {a.dtype}"


def _worker_main(conn, memory_bytes: int) -> None:  # pragma: no cover - runs in the child
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ValueError, OSError):
        pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    devnull = os.open(os.devnull, os.O_WRONLY)  # C-level chatter of the readers (the parent keeps the outcomes)
    os.dup2(devnull, 2)
    conn.send(("ready", ""))
    while True:
        job = conn.recv()
        if job is None:
            return
        fmt, path = job
        conn.send(read_case(fmt, path))


class Worker:
    """One reading process; restarted after a timeout or a crash."""

    def __init__(self, memory_bytes: int):
        self.memory_bytes = memory_bytes
        self.proc = None
        self.conn = None
        self.start()

    def start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a clean interpreter: no state from the parent's readers
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.memory_bytes), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not self.conn.poll(180):
            raise RuntimeError("the fuzz worker did not start")
        self.conn.recv()

    def run(self, fmt: str, path: str, timeout: float) -> Tuple[str, str]:
        try:
            self.conn.send((fmt, path))
            if self.conn.poll(timeout):
                return self.conn.recv()
            outcome = ("timeout", f"no answer within {timeout:g} s")
        except (EOFError, OSError, BrokenPipeError):
            outcome = ("crash", "")
        self.proc.join(0.5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        code = self.proc.exitcode
        if outcome[0] == "crash":
            outcome = ("crash", f"worker exit code {code}")
        self.start()
        return outcome

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FuzzResult:
    counts: Counter = field(default_factory=Counter)  # (format, outcome) -> n
    findings: List[dict] = field(default_factory=list)
    cases: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        formats = sorted({f for f, _ in self.counts})
        outcomes = list(OUTCOMES_OK) + sorted({o for _, o in self.counts} - set(OUTCOMES_OK))
        rows = ["| format | " + " | ".join(outcomes) + " | total |", "|---" * (len(outcomes) + 2) + "|"]
        for f in formats:
            n = [self.counts.get((f, o), 0) for o in outcomes]
            rows.append(f"| {f} | " + " | ".join(str(v) for v in n) + f" | {sum(n)} |")
        totals = [sum(self.counts.get((f, o), 0) for f in formats) for o in outcomes]
        rows.append("| **all** | " + " | ".join(str(v) for v in totals) + f" | {sum(totals)} |")
        return "\n".join(rows)


def fuzz(cases: int, seed: int = 0, workers: int = 2, timeout: float = 30.0, out: Optional[Path] = None,
         memory_bytes: int = 4 << 30, progress=None) -> FuzzResult:
    """Run ``cases`` seeded mutations over the seeds with ``workers`` reading processes; returns the counts and
    findings (copies of the findings' files go to ``out/findings/`` when ``out`` is given)."""
    t0 = time.monotonic()
    result = FuzzResult()
    work = Path(tempfile.mkdtemp(prefix="semisupseg-fuzz-"))
    lock = threading.Lock()
    try:
        seeds = make_seeds(work / "seeds")
        formats = sorted(seeds)
        jobs: "queue.Queue[Optional[int]]" = queue.Queue()
        for i in range(cases):
            jobs.put(i)

        def one(worker: Worker, i: int) -> None:
            rng = random.Random(f"{seed}:{i}")
            fmt = formats[i % len(formats)]
            dst = work / "cases" / f"{i:06d}_{fmt}" / (Path(seeds[fmt]).name if fmt != "dicom" else "series")
            dst.parent.mkdir(parents=True, exist_ok=True)
            what = mutate(rng, fmt, Path(seeds[fmt]), dst)
            outcome, detail = worker.run(fmt, str(dst), timeout)
            with lock:
                result.counts[(fmt, outcome)] += 1
                result.cases += 1
                if outcome not in OUTCOMES_OK:
                    finding = {"case": i, "format": fmt, "mutation": what, "outcome": outcome, "detail": detail}
                    if out is not None:
                        keep = Path(out) / "findings" / dst.parent.name
                        shutil.copytree(dst.parent, keep, dirs_exist_ok=True)
                        finding["file"] = str(keep / dst.name)
                    result.findings.append(finding)
                done = result.cases
            shutil.rmtree(dst.parent, ignore_errors=True)
            if progress is not None:
                progress(done, cases)

        def loop() -> None:
            worker = Worker(memory_bytes)
            try:
                while True:
                    try:
                        i = jobs.get_nowait()
                    except queue.Empty:
                        return
                    one(worker, i)
            finally:
                worker.close()

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(max(1, workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--out", type=Path, default=None, help="folder for findings.json and the findings' files")
    args = parser.parse_args(argv)

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            print(f"{done}/{total} cases", file=sys.stderr, flush=True)

    result = fuzz(args.cases, args.seed, args.workers, args.timeout, args.out, progress=progress)
    print(result.table())
    print(f"\n{result.cases} cases in {result.seconds:.0f} s (seed {args.seed}, {args.workers} workers); "
          f"{len(result.findings)} finding(s)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "findings.json").write_text(json.dumps(
            {"cases": result.cases, "seed": args.seed, "seconds": round(result.seconds, 1),
             "counts": {f"{f} {o}": n for (f, o), n in sorted(result.counts.items())},
             "findings": result.findings}, indent=1) + "\n", encoding="utf-8")
    for f in result.findings[:20]:
        print(f"finding: case {f['case']} {f['format']} {f['mutation']}: {f['outcome']} {f['detail'][-300:]}")
    return 1 if result.findings else 0


if __name__ == "__main__":
    sys.exit(main())
