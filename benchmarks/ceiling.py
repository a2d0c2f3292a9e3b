"""The CPU's matrix-product ceiling, measured carefully: the number every time in RESULTS.md is read against.

For each dtype (bf16, fp32), thread count and square size ``n``, a ``n x n @ n x n`` product is timed ``--repeats``
times after two warm-up products; the table gives the median and the best rate in GMAC/s (one multiply-accumulate =
2 floating-point operations: GFLOP/s is twice the GMAC/s column, printed too because vendors and some tools quote
FLOP/s). With ``--clock-ghz``, beside it the cores' own peak: threads x clock x MAC per cycle of the vector units
(for a CPU family this script knows). A 3-D convolution of the V-Net's shape (bf16, channels-last) shows
what the network's own kernels reach next to the matrix product.

    python benchmarks/ceiling.py                 # the table (~2-3 min on 2 cores); run it on a quiet machine
    python benchmarks/ceiling.py --sizes 1024 --repeats 3 --threads 1   # a quick look
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from macs import time_matmul  # noqa: E402

#: MAC per cycle per core of the vector units, per (vendor, CPU family): (bf16 with avx512_bf16, fp32 FMA).
#: AMD family 25 (Zen 4 with avx512_bf16): two 256-bit FMA pipes, a 512-bit instruction split over them; VDPBF16PS
#: does 16 bf16 MAC per 256-bit half -> 32 bf16 MAC/cycle; fp32: 2 x 8 lanes = 16 FMA/cycle. The peak column needs
#: the clock the cores really run at (``--clock-ghz``): a virtual machine's /proc/cpuinfo shows the nominal clock,
#: not the boost clock (a quiet Zen 4 core measured above its "peak" at the nominal 2.6 GHz here).
MAC_PER_CYCLE = {("AuthenticAMD", 25): (32, 16)}


def cpu_identity() -> Tuple[str, Optional[int], Optional[float], str, List[str]]:
    """(vendor, family, nominal MHz, model name, feature flags) of the first CPU in /proc/cpuinfo; unknowns as
    None/''/[]."""
    vendor, family, mhz, name, flags = "", None, None, platform.processor(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value
                elif key == "cpu family" and family is None:
                    family = int(value)
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key == "model name" and value:
                    name = value
                elif key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return vendor, family, mhz, name, flags


def time_conv3d(threads: int, repeats: int, channels: int = 64, size: Tuple[int, int, int] = (24, 32, 32)
                ) -> Tuple[List[float], int]:
    """Seconds per bf16 channels-last 3x3x3 convolution (``channels`` -> ``channels``, batch 2, padding 1, the
    V-Net's inner-level shape), and its MAC count."""
    torch.set_num_threads(threads)
    x = torch.randn(2, channels, *size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(channels, channels, 3, 3, 3).to(torch.bfloat16).contiguous(
        memory_format=torch.channels_last_3d)
    macs = 2 * channels * channels * 27 * size[0] * size[1] * size[2]
    with torch.no_grad():
        for _ in range(2):
            F.conv3d(x, w, padding=1)
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            F.conv3d(x, w, padding=1)
            out.append(time.perf_counter() - t)
    return out, macs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 6144])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and all cores")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--clock-ghz", type=float, help="the cores' real (boost) clock, for the peak column (default: no "
                                                 "peak column; /proc/cpuinfo's MHz is printed for reference)")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = args.threads or sorted({1, cores})
    vendor, family, mhz, name, flags = cpu_identity()
    ghz = args.clock_ghz
    per_cycle = MAC_PER_CYCLE.get((vendor, family))
    print(f"CPU: {name or '?'} ({vendor or '?'} family {family}), {cores} cores, /proc/cpuinfo clock "
          f"{mhz or '?'} MHz (nominal), avx512_bf16: {'avx512_bf16' in flags}, "
          f"amx: {'amx_bf16' in flags}; torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    peaks: Dict[Tuple[torch.dtype, int], float] = {}
    if per_cycle and ghz:
        for dtype, mac in zip((torch.bfloat16, torch.float32), per_cycle):
            for t in threads:
                peaks[(dtype, t)] = t * ghz * mac
    print("\n| dtype | threads | n | median GMAC/s | best GMAC/s | best GFLOP/s | peak at --clock-ghz GMAC/s "
          "| best / peak |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, label in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        for t in threads:
            for n in args.sizes:
                secs = time_matmul(n, dtype, t, args.repeats)
                rates = [n ** 3 / s / 1e9 for s in secs]
                peak = peaks.get((dtype, t))
                print(f"| {label} | {t} | {n} | {statistics.median(rates):.1f} | {max(rates):.1f} | "
                      f"{2 * max(rates):.1f} | {f'{peak:.0f}' if peak else ''} | "
                      f"{f'{max(rates) / peak:.2f}' if peak else ''} |", flush=True)
    print("\n| kernel | threads | median GMAC/s | best GMAC/s |")
    print("|---|---|---|---|")
    for t in threads:
        secs, macs = time_conv3d(t, args.repeats)
        rates = [macs / s / 1e9 for s in secs]
        print(f"| conv3d 3x3x3 64->64, 2 x 24x32x32, bf16 channels-last | {t} | {statistics.median(rates):.1f} | "
              f"{max(rates):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
