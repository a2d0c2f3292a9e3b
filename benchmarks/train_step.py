"""Benchmark one training step per method, side by side, on the same batch shape (issue 5's speed target).

Every method runs through the real engine (:class:`semisupseg.training.engine.Trainer`: data sampling, the method's
forward/losses, backward, optimiser, EMA, ``after_step`` — e.g. SASSNet's discriminator update) on the bundled LA
sample (4 cases, labeled and unlabeled alike; the data only sets the batch content, not the cost). Also timed: a bare
V-Net (SDM head) forward + backward + SGD step of the same batch, the floor every method stands on, and the data
sampling alone. For ``bare`` and ``sassnet`` the table also estimates the step's convolution work (:mod:`macs`:
forward + backward ~ 3 forwards) and the time it would take at the machine's ceiling (a large matrix product in
the same precision and threads) -- the floor no implementation of that step can beat here. Each variant runs in its
own subprocess; the median of ``--steps`` steps after ``--warmup`` steps is
reported, with the ratio to the bare V-Net step.

Usage::

    python benchmarks/train_step.py [--methods supervised sassnet ...] [--steps 10] [--warmup 3] [--threads 2]
        [--amp auto|off] [--patch 64 64 48] [--batch 4 --labeled-batch 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_METHODS = ["supervised", "mean-teacher", "ua-mt", "entropy-min", "dtc", "sassnet", "sbnet", "vwadv", "sgrs"]


def _config(method: str, args: argparse.Namespace, out: str):
    from semisupseg.data import sample_dataset
    from semisupseg.training.config import TrainConfig

    la = sample_dataset("la")
    cfg = TrainConfig(method=method, out=out, iterations=10 ** 6, batch_size=args.batch,
                      labeled_batch_size=args.labeled_batch, device="cpu", amp=args.amp, num_threads=args.threads,
                      val_every=10 ** 6, save_every=10 ** 6, log_every=10 ** 6)
    cfg.data.labeled = str(la)
    cfg.data.unlabeled = [str(la / "imagesTr")]
    cfg.data.validation = 0
    cfg.data.patch_size = list(args.patch)
    return cfg


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from semisupseg.training.engine import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        # the floor rows use a two-stream method's batcher, so they see the full batch (supervised draws labeled only)
        method = "sassnet" if args.variant in ("bare", "data") else args.variant
        trainer = Trainer(_config(method, args, tmp), handle_signals=False)
        trainer._prepare_run_dir()
        trainer._setup()
        times: List[float] = []
        if args.variant == "data":
            step = trainer.batcher.next
        elif args.variant == "bare":
            from semisupseg.nets import VNet, VNetConfig

            torch.manual_seed(0)
            net = VNet(VNetConfig(n_filters=16, num_classes=2, sdm_head=True)).to(trainer.device)
            if trainer.channels_last:
                net = net.to(memory_format=torch.channels_last_3d)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            image, label = trainer.batcher.next()
            batch = trainer._to_batch(image, label)

            def step() -> None:
                with trainer._autocast():
                    out = net(batch.image)
                    loss = out["seg"].float().square().mean() + out["sdm"].float().square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        else:
            def step() -> None:
                trainer._train_step()
                trainer.iteration += 1
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        print(json.dumps({"variant": args.variant, "median_s": statistics.median(times), "min_s": min(times),
                          "bf16": bool(trainer.use_bf16), "channels_last": bool(trainer.channels_last),
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 48], metavar=("X", "Y", "Z"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--labeled-batch", type=int, default=2)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        child(args)
        return 0
    rows: List[Dict[str, Any]] = []
    for variant in ["data", "bare"] + list(args.methods):
        cmd = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--threads", str(args.threads), "--amp", args.amp, "--batch", str(args.batch),
               "--labeled-batch", str(args.labeled_batch), "--patch", *map(str, args.patch)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{variant}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {variant}: {rows[-1]['median_s']:.3f} s", file=sys.stderr, flush=True)
    bare = next((r["median_s"] for r in rows if r["variant"] == "bare"), None)
    import torch

    from macs import conv_macs, gemm_peak
    from semisupseg.nets import VNet, VNetConfig
    from semisupseg.nets.discriminators import DiscriminatorConfig, MapImageDiscriminator

    peak = gemm_peak(torch.bfloat16 if args.amp != "off" else torch.float32, args.threads)
    x, y, z = args.patch
    nu = args.batch - args.labeled_batch
    full = torch.zeros(args.batch, 1, z, y, x)
    vnet = conv_macs(VNet(VNetConfig(n_filters=16, num_classes=2, seg_form="sigmoid", sdm_head=True)), full)
    disc = conv_macs(MapImageDiscriminator(DiscriminatorConfig(map_channels=1, image_channels=1)), full, full)
    # forward + backward ~ 3 forwards; SASSNet adds D's generator pass on the unlabeled part (forward + input
    # gradients ~ 2 forwards) and D's update on the whole batch (forward + backward ~ 3 forwards)
    estimates = {"bare": 3 * vnet, "sassnet": 3 * vnet + 2 * disc * nu / args.batch + 3 * disc}
    print(f"\npatch {args.patch[0]}x{args.patch[1]}x{args.patch[2]} (x,y,z), batch {args.batch} "
          f"({args.labeled_batch} labeled), n_filters 16, {args.threads} threads, amp {args.amp}, "
          f"median of {args.steps} steps after {args.warmup} warm-up\n")
    print(f"CPU ceiling ({args.threads} threads, 4096^3 matrix product, "
          f"{'bf16' if args.amp != 'off' else 'fp32'}): {peak:.0f} GMAC/s\n")
    print("| variant | bf16 | median s/step | min s | x bare V-Net | GMAC/step (est.) | floor s at ceiling | "
          "peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['median_s'] / bare:.2f}" if bare and r["variant"] != "data" else ""
        est = estimates.get(r["variant"])
        cost = "" if est is None else f"{est / 1e9:.0f} | {est / 1e9 / peak:.2f}"
        print(f"| {r['variant']} | {'yes' if r['bf16'] else 'no'} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
              f"{ratio} | {cost if cost else ' | '} | {r['peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
