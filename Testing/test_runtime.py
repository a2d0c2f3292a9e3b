"""Device selection and the optimiser factory of ``semisupseg.runtime``."""
from __future__ import annotations

import pytest
import torch

from semisupseg.errors import InputError
from semisupseg.runtime import make_optimizer, resolve_device


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    for spec in ("xla", "meta"):  # torch knows them; they were a traceback deep in training
        with pytest.raises(InputError, match=f"device '{spec}' is not supported: use auto, cpu, cuda or cuda:N"):
            resolve_device(spec)
    if not torch.backends.mps.is_available():
        with pytest.raises(InputError, match="MPS is not available"):
            resolve_device("mps")


def _fused_supported() -> bool:
    try:
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


@pytest.mark.parametrize("cls,kwargs", [(torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
                                        (torch.optim.Adam, dict(lr=1e-3, betas=(0.9, 0.99))),
                                        (torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2))])
def test_make_optimizer_matches_the_default_update(cls, kwargs) -> None:
    """The fused optimiser (when this torch has it) takes the same steps as the default one, to float rounding,
    and accepts a generator of parameters."""
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 3)
    b = torch.nn.Linear(8, 3)
    b.load_state_dict(a.state_dict())
    initial = a.weight.detach().clone()
    opt_a = make_optimizer(cls, a.parameters(), **kwargs)
    opt_b = cls(b.parameters(), **kwargs)
    assert opt_a.param_groups[0].get("fused") == (True if _fused_supported() else opt_b.param_groups[0].get("fused"))
    x = torch.randn(16, 8)
    for _ in range(5):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    assert (a.weight - initial).abs().max() > 1e-4  # the steps did move the weights


def test_make_optimizer_falls_back_without_fused_kernels() -> None:
    class NoFused(torch.optim.SGD):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("fused not supported")
            super().__init__(params, **kwargs)

    opt = make_optimizer(NoFused, torch.nn.Linear(2, 2).parameters(), lr=0.1)
    assert isinstance(opt, NoFused) and not opt.param_groups[0].get("fused")
    assert len(opt.param_groups[0]["params"]) == 2  # the generator was not consumed by the failed attempt


# --------------------------------------------------------------------------------------------------------------
# CPU bf16: 3x3x3 convolutions of depth-2 inputs leave autocast (oneDNN weight-gradient bug, see runtime)

def test_needs_fp32_conv3x3_only_for_depth_two_under_cpu_bf16_autocast_with_grad() -> None:
    from semisupseg.runtime import needs_fp32_conv3x3

    two, three = torch.zeros(1, 4, 2, 5, 5), torch.zeros(1, 4, 3, 2, 2)
    assert not needs_fp32_conv3x3(two)  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert needs_fp32_conv3x3(two)
        assert not needs_fp32_conv3x3(three)  # only the first spatial side (Z) matters
        assert not needs_fp32_conv3x3(torch.zeros(1, 4, 5, 5))  # not a 5-D batch
        with torch.no_grad():
            assert not needs_fp32_conv3x3(two)  # forward values are right; only gradients suffer


def _weight_grad(conv: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, bf16: bool, guarded: bool) -> torch.Tensor:
    from semisupseg.runtime import fp32_conv3x3

    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = fp32_conv3x3(conv, x) if guarded else conv(x)
    out.float().backward(g)
    return conv.weight.grad.clone()


@pytest.mark.skipif(not __import__("semisupseg.runtime", fromlist=["x"]).bf16_supported(torch.device("cpu")),
                    reason="this CPU has no bf16 kernels")
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_guarded_conv3x3_weight_gradient_matches_fp32(depth) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, depth, 6, 6)
    g = torch.randn(2, 16, depth, 6, 6)
    ref = _weight_grad(conv, x, g, bf16=False, guarded=False)
    got = _weight_grad(conv, x, g, bf16=True, guarded=True)
    assert float((got - ref).norm() / ref.norm()) < 0.02


def test_vnet_bottleneck_of_a_32_deep_patch_leaves_bf16(monkeypatch) -> None:
    """A patch 32 voxels deep puts the V-Net bottleneck (block_five) at depth 2: under CPU bf16 autocast with grad
    that block, and only that block, runs in fp32 (the guard of the test above); without grad nothing changes."""
    from semisupseg import runtime
    from semisupseg.nets import VNet, VNetConfig

    guarded = []
    real = runtime.needs_fp32_conv3x3

    def spy(x):
        hit = real(x)
        if hit:
            guarded.append(tuple(x.shape))
        return hit

    monkeypatch.setattr(runtime, "needs_fp32_conv3x3", spy)
    net = VNet(VNetConfig(n_filters=2, num_classes=2)).train()
    x = torch.randn(1, 1, 32, 48, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        assert out["seg"].shape == (1, 2, 32, 48, 32)
        assert guarded == [(1, 32, 2, 3, 2)]  # block_five's input: 16 n channels, the 32/16 x 48/16 x 32/16 bottleneck
        guarded.clear()
        with torch.no_grad():
            net(x)
    assert guarded == []
