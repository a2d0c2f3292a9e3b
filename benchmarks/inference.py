"""Benchmark whole-scan inference on a full-resolution LA case (0.625 mm, window 112x112x80 x,y,z).

Variants (each in a fresh subprocess, so its peak resident memory — ``ru_maxrss`` — is its own):

* ``a``       papers' layout (strides 18/18/4, uniform), one window at a time, plain fp32 (as the releases);
* ``b``       papers' layout, windows batched (``--batch``), fast path;
* ``b_fp32``  papers' layout, batched, fp32 (what batching alone gives);
* ``c``       default layout (overlap 0.5, Gaussian), fast path (channels_last_3d + guarded bf16);
* ``c_fp32``  default layout, fp32 contiguous (``fast=False``);
* ``d``       the whole padded scan as one window (fully convolutional), fast path.

Timed is :func:`semisupseg.inference.segment` end to end (normalisation, windows, argmax, entropy) on the scan, after
a warm-up on one window's worth of it (oneDNN primitive creation, the fast path's one-off fp32-vs-bf16 probe, whose
time is reported apart), median of ``--repeats`` runs (``--repeats-slow`` for the fp32 variants). With ``--model``
(a trained model file) the label agreement (Dice) of every variant against ``a`` is meaningful, and the Dice against
the case's own label (the h5 ``label``) is printed; with random weights
(default: V-Net, n_filters 16, seed 0) it is printed but says little. ``GMAC/scan`` counts the
convolutions' multiply-accumulates (:mod:`macs`) and ``GMAC/s`` what was achieved; the header gives the machine's
ceiling (a large bf16 / fp32 matrix product with the same threads). The last column, CPU seconds per wall second of
the timed runs, shows contention: about ``--threads`` on an idle machine, less when other processes compete.

Usage::

    python benchmarks/inference.py [--case ../shared/data/LA/h5/<ID>/mri_norm2.h5 ...] [--model MODEL.pt]
        [--variants a b c c_fp32] [--repeats 3] [--threads 2] [--batch 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_H5 = REPO.parent / "shared" / "data" / "LA" / "h5"

VARIANTS = {
    "a": dict(layout="papers", batch_size=1, fast=False),
    "b": dict(layout="papers", batch_size=None, fast=True),
    "b_fp32": dict(layout="papers", batch_size=None, fast=False),
    "c": dict(layout="default", batch_size=1, fast=True),
    "c_fp32": dict(layout="default", batch_size=1, fast=False),
    "d": dict(layout="whole", batch_size=1, fast=True),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_and_card(model_path):
    import torch

    from semisupseg.checkpoint import load_model, make_card
    from semisupseg.nets import VNet, VNetConfig

    if model_path:
        return load_model(model_path, device="cpu")
    torch.manual_seed(0)
    model = VNet(VNetConfig(n_filters=16, num_classes=2)).eval()
    card = make_card(model, method="random-weights", spacing_xyz=(0.625,) * 3, patch_size_xyz=(112, 112, 80))
    return model, card


def child(args: argparse.Namespace) -> None:
    """Run one variant; print a JSON line with timings, memory and (in a file) the labels."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from semisupseg.inference import SegmentOptions, segment
    from semisupseg.io import read_image_or_h5

    spec = dict(VARIANTS[args.variant])
    if spec["batch_size"] is None:
        spec["batch_size"] = args.batch
    volume = read_image_or_h5(args.case[0] if isinstance(args.case, list) else args.case)
    model, card = _model_and_card(args.model)
    rss_loaded = _rss_mb()
    options = SegmentOptions(layout=spec["layout"], batch_size=spec["batch_size"], fast=spec["fast"], device="cpu")
    # warm-up on one window's worth of the scan: oneDNN primitives, the fast-path copy and its bf16 check
    pz, py, px = card.patch_size_zyx
    from semisupseg.volume import Volume

    warm = Volume(np.ascontiguousarray(volume.array[:pz, :py, :px]), volume.spacing, volume.origin, volume.direction)
    t = time.perf_counter()
    segment(warm, model, card, options)
    times = [time.perf_counter() - t]
    result = None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(args.repeats):
        t = time.perf_counter()
        result = segment(volume, model, card, options)
        times.append(time.perf_counter() - t)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    assert result is not None
    # CPU seconds per wall second of the timed runs: ~threads on an idle machine, less when others compete
    cpu_per_wall = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / max(sum(times[1:]), 1e-9)
    np.save(args.labels_out, result.labels.array)
    info = result.info
    from macs import conv_macs

    window = [int(v) for v in info["window_zyx"]]
    peak_mb = _rss_mb()
    macs = conv_macs(model, torch.zeros([1, int(card.in_channels)] + window, device="meta")) * int(info["windows"])
    print(json.dumps({
        "variant": args.variant, "layout": spec["layout"], "batch_size": spec["batch_size"], "fast": spec["fast"],
        "first_s": times[0], "median_s": statistics.median(times[1:]), "times_s": times[1:],
        "windows": info["windows"], "precision": info["precision"],
        "fast_path_agreement": info.get("fast_path_agreement"),
        "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_mb,
        "shape_zyx": list(volume.shape_zyx), "cpu_per_wall": cpu_per_wall,
        "window_zyx": window, "gmac": macs / 1e9,
    }))


def dice(a, b) -> float:
    a, b = a > 0, b > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _reference_label(case: Path):
    """The case's ground-truth label (z, y, x) when the file has one (LA h5 ``label``), else ``None``."""
    try:
        from semisupseg.io import read_label_or_h5

        return read_label_or_h5(case).array
    except Exception:  # noqa: BLE001 - a case without a label just has no accuracy column
        return None


def run_case(case: Path, args: argparse.Namespace) -> None:
    import numpy as np

    load_before = os.getloadavg()
    rows = []
    labels = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            out = Path(tmp) / f"{variant}.npy"
            repeats = args.repeats if VARIANTS[variant]["fast"] else args.repeats_slow
            cmd = [sys.executable, __file__, "--child", "--variant", variant, "--case", str(case),
                   "--threads", str(args.threads), "--repeats", str(repeats), "--batch", str(args.batch),
                   "--labels-out", str(out)] + (["--model", args.model] if args.model else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"variant {variant} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            labels[variant] = np.load(out)
            rows.append(row)
            print(f"  {variant}: median {row['median_s']:.2f} s, peak {row['peak_rss_mb']:.0f} MB", flush=True)
    ref = labels.get("a")
    truth = _reference_label(case) if args.model else None
    base = next((r["median_s"] for r in rows if r["variant"] == "a"), None)
    header = ("| variant | layout | batch | path | windows | median s/scan | s/window | vs (a) | "
              "GMAC/scan | GMAC/s | warm-up (1 window) s | peak RSS MB | RSS after load MB | Dice vs (a) | "
              "Dice vs label | CPU s per wall s |")
    print(f"\ncase {case.parent.name if case.name == 'mri_norm2.h5' else case.name}")
    print(header)
    print("|" + "---|" * 16)
    for r in rows:
        path = r["precision"] + (" (fast path" + (f", probe Dice {r['fast_path_agreement']:.4f})"
                                                  if r["fast_path_agreement"] not in (None,) else ")")
                                 if r["fast"] else " plain")
        d = "" if ref is None else f"{dice(labels[r['variant']], ref):.4f}"
        g = "" if truth is None else f"{dice(labels[r['variant']], truth):.4f}"
        speed = "" if base is None else f"{base / r['median_s']:.1f}x"
        print(f"| {r['variant']} | {r['layout']} | {r['batch_size']} | {path} | {r['windows']} | "
              f"{r['median_s']:.2f} | {r['median_s'] / r['windows']:.3f} | {speed} | {r['gmac']:.0f} | "
              f"{r['gmac'] / r['median_s']:.0f} | {r['first_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_loaded_mb']:.0f} | {d} | {g} | {r['cpu_per_wall']:.2f} |")
    pairs = [(f, r) for f, r in (("c", "c_fp32"), ("b", "b_fp32"), ("b", "a"), ("d", "c_fp32"), ("d", "c"))
             if f in labels and r in labels]
    if pairs:
        print("\nlabel Dice between variants: " + ", ".join(f"{f} vs {r} {dice(labels[f], labels[r]):.4f}"
                                                          for f, r in pairs))
    print(f"scan shape (z, y, x) {rows[0]['shape_zyx']}; load average before {load_before}, after "
          f"{os.getloadavg()}")


def parent(args: argparse.Namespace) -> None:
    import torch

    cases = [Path(c) for c in args.case] if args.case else sorted(DEFAULT_H5.glob("*/mri_norm2.h5"))[:1]
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "")
    amx = "amx_tile" in flags
    from macs import gemm_peak

    print(f"CPU ceiling ({args.threads} threads, 4096^3 matrix product): bf16 {gemm_peak(torch.bfloat16, args.threads):.0f}"
          f" GMAC/s, fp32 {gemm_peak(torch.float32, args.threads):.0f} GMAC/s")
    print(f"model {args.model or 'random V-Net n_filters 16'} | threads {args.threads} | "
          f"torch {torch.__version__} | cpu capability {torch.backends.cpu.get_cpu_capability()} | "
          f"avx512_bf16 {'avx512_bf16' in flags} | AMX {amx} | "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    for case in cases:
        run_case(case, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", nargs="+", default=None,
                   help="LA mri_norm2.h5 file(s) (default: the first in ../shared/data/LA/h5)")
    p.add_argument("--model", default=None, help="trained model file (default: random V-Net n_filters 16)")
    p.add_argument("--variants", nargs="+", default=["a", "b", "b_fp32", "c", "c_fp32", "d"], choices=sorted(VARIANTS))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant (after one warm-up)")
    p.add_argument("--repeats-slow", type=int, default=1, help="timed runs of the fp32 variants (slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="windows per batch of the batched variants")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
