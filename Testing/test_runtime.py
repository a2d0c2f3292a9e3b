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
