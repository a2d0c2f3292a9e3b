"""Where the V-Net's time goes, layer by layer, against the CPU's ceiling.

The inference fast path's model (eval mode, batch norm folded into the convolutions, channels_last_3d, bf16 autocast
— :func:`semisupseg.inference.sliding_window._fast_model`) runs one batch of windows ``--repeats`` times; every leaf
module is timed with forward hooks (``perf_counter`` before and after: each hook pair brackets exactly that module's
kernel calls). The table groups the layers by kind and level (the encoder and
decoder level of the feature map, 1 = full resolution) and gives per group: share of the forward, milliseconds,
GMAC (convolutions: :func:`macs.module_macs`) and achieved GMAC/s, beside ``--ceiling`` (the machine's bf16
conv3d rate of ``ceiling.py``; 238 GMAC/s on 2 cores, 121 on one, measured 2026-12-03). "between layers" is the
forward's time outside every leaf module (the skip additions, layout conversions, the heads' softmax/tanh).

    python benchmarks/layer_profile.py                         # LA window 112x112x80, batch 2, n_filters 16
    python benchmarks/layer_profile.py --threads 1 --ceiling 121
    python benchmarks/layer_profile.py --window 64 64 48 --batch 4 --train   # a training step's forward + backward

With ``--train`` the model is the training model (batch norm, train mode) and a backward of the summed outputs is
timed too (whole step only: hooks see the forward); convolutions count 3x their forward MACs for the step (input and
weight gradients; the first layer's input gradient is skipped by autograd, so slightly less).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from macs import module_macs  # noqa: E402
from semisupseg.inference.sliding_window import _fast_model  # noqa: E402
from semisupseg.nets.vnet import VNet  # noqa: E402
from semisupseg.runtime import autocast, to_channels_last  # noqa: E402

#: block name -> feature level (1 = full resolution, 5 = 1/16)
LEVEL = {"block_one": 1, "block_one_dw": 1, "block_two": 2, "block_two_dw": 2, "block_three": 3, "block_three_dw": 3,
         "block_four": 4, "block_four_dw": 4, "block_five": 5, "block_five_up": 5, "block_six": 4, "block_six_up": 4,
         "block_seven": 3, "block_seven_up": 3, "block_eight": 2, "block_eight_up": 2, "block_nine": 1,
         "out_conv": 1, "out_conv2": 1, "dropout": 1}


def group_of(name: str, module: nn.Module) -> str:
    block = name.split(".")[0]
    level = LEVEL.get(block, 0)
    if isinstance(module, nn.ConvTranspose3d):
        kind = "transposed conv 2x2x2"
    elif isinstance(module, nn.Conv3d):
        kind = {3: "conv 3x3x3", 2: "conv 2x2x2 stride 2", 1: "conv 1x1x1 (heads)"}[module.kernel_size[0]]
        if block == "block_one":
            kind = "conv 3x3x3, first (1 input channel)"
    else:
        kind = type(module).__name__
    side = "decoder" if block in ("block_five_up", "block_six", "block_six_up", "block_seven", "block_seven_up",
                                  "block_eight", "block_eight_up", "block_nine") else "encoder"
    if kind.startswith("conv 1x1x1") or kind.startswith("conv 3x3x3, first"):
        return kind
    return f"{kind}, {side} level {level}" if kind.startswith(("conv", "transposed")) else kind


def profile(model: nn.Module, x: torch.Tensor, repeats: int, train: bool) -> Tuple[Dict, List[float], List[float]]:
    """Per-group seconds (median over repeats) and MACs, and the whole forward / step times."""
    times: Dict[str, List[float]] = {}
    macs: Dict[str, int] = {}
    starts: Dict[str, float] = {}
    record_macs = [True]  # MACs are counted in the first (warm-up) forward only
    handles = []
    for name, m in model.named_modules():
        if list(m.children()):
            continue
        g = group_of(name, m)

        def pre(mod, args, key=name):
            starts[key] = time.perf_counter()

        def post(mod, args, out, key=name, group=g):
            dt = time.perf_counter() - starts[key]
            times.setdefault(group, [0.0])[-1] += dt
            if record_macs[0]:
                macs[group] = macs.get(group, 0) + module_macs(mod, args[0], out)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    forward_s, step_s = [], []
    try:
        for r in range(repeats + 1):
            for v in times.values():
                v.append(0.0)
            t0 = time.perf_counter()
            with autocast(x.device, enabled=True), torch.set_grad_enabled(train):
                out = model(x)
            t1 = time.perf_counter()
            if train:
                sum(v.float().sum() for v in out.values() if torch.is_tensor(v)).backward()
                model.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            record_macs[0] = False
            if r == 0:  # warm-up (oneDNN primitive creation)
                for v in times.values():
                    v.clear()
                continue
            forward_s.append(t1 - t0)
            step_s.append(t2 - t0)
    finally:
        for h in handles:
            h.remove()
    med = OrderedDict((g, (statistics.median(v[:repeats]), macs.get(g, 0))) for g, v in times.items())
    return med, forward_s, step_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, nargs=3, default=[112, 112, 80], metavar=("X", "Y", "Z"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--n-filters", type=int, default=16)
    p.add_argument("--sdm-head", action="store_true", help="V-Net with the SDM head (SASSNet/DTC models)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ceiling", type=float, default=238.0, help="GMAC/s the CPU's bf16 conv3d reaches (ceiling.py)")
    p.add_argument("--train", action="store_true", help="training model and a backward (step time)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = VNet(in_channels=1, num_classes=2, n_filters=args.n_filters, sdm_head=args.sdm_head)
    x = torch.randn(args.batch, 1, args.window[2], args.window[1], args.window[0])
    if args.train:
        model = net.train().to(memory_format=torch.channels_last_3d)
        x = to_channels_last(x)
    else:
        model = _fast_model(net, torch.device("cpu")).model
        x = to_channels_last(x)
    groups, fwd, step = profile(model, x, args.repeats, args.train)
    total = statistics.median(fwd)
    inside = sum(t for t, _ in groups.values())
    all_macs = sum(m for _, m in groups.values())
    print(f"V-Net n_filters {args.n_filters}, batch {args.batch} x {args.window[0]}x{args.window[1]}x{args.window[2]}"
          f" (x,y,z), {'training step' if args.train else 'inference fast path'}, bf16, {args.threads} thread(s), "
          f"torch {torch.__version__}; forward median {total * 1e3:.0f} ms over {args.repeats}, "
          f"{all_macs / 1e9:.1f} GMAC -> {all_macs / total / 1e9:.0f} GMAC/s "
          f"({100 * all_macs / total / 1e9 / args.ceiling:.0f} % of {args.ceiling:.0f})")
    if args.train:
        st = statistics.median(step)
        print(f"whole step (forward + backward) median {st * 1e3:.0f} ms: {3 * all_macs / 1e9:.1f} GMAC at ~3x the "
              f"forward -> {3 * all_macs / st / 1e9:.0f} GMAC/s ({100 * 3 * all_macs / st / 1e9 / args.ceiling:.0f} %)")
    print()
    print("| layers | share of forward | ms | GMAC | GMAC/s | % of ceiling | ms lost vs ceiling |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
    for g, (t, m) in rows + [("between layers", (total - inside, 0))]:
        rate = m / t / 1e9 if m and t > 0 else 0.0
        lost = (t - m / (args.ceiling * 1e9)) * 1e3 if m else t * 1e3
        rate_cols = f"{rate:.0f} | {100 * rate / args.ceiling:.0f} %" if m else "— | —"
        print(f"| {g} | {100 * t / total:.1f} % | {t * 1e3:.1f} | {m / 1e9:.2f} | {rate_cols} | {lost:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
