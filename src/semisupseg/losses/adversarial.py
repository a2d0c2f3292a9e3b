"""Adversarial terms of the map discriminators (SASSNet, SB-Net), on single-logit discriminator outputs.

Convention: the discriminator ``D`` outputs a logit ``l`` per sample, ``D = sigmoid(l)`` is the probability that the
judged map comes from a **labeled** image ("real"); maps of unlabeled images are "fake".

* :func:`discriminator_loss` -- SASSNet eq. 5 as a loss for ``D``:
  ``-[Σ_l log D(l) + Σ_u log(1 - D(u))] / (N_l + N_u)``
  (the mean binary cross-entropy over the whole two-stream batch, which is what the release's two-class
  cross-entropy computes).
* :func:`generator_loss` -- SASSNet eq. 6 (the non-saturating surrogate the segmenter minimises, on unlabeled data
  only): ``-mean_u log D(u)``; SB-Net eq. 16 is the same term on its PSM5 maps.
* :func:`frozen` -- a context in which a module's parameters do not require gradients, so a generator term
  back-propagates *through* the discriminator into the segmenter without computing or accumulating discriminator
  gradients.

All losses are computed in float32 (safe under bf16 autocast).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the discriminator: real (labeled) → 1, fake (unlabeled) → 0, averaged over all samples."""
    real_logits, fake_logits = real_logits.float().reshape(-1), fake_logits.float().reshape(-1)
    n = real_logits.numel() + fake_logits.numel()
    if n == 0:
        raise ValueError("discriminator_loss needs at least one sample")
    # -log sigmoid(l) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l)
    return (F.softplus(-real_logits).sum() + F.softplus(fake_logits).sum()) / n  # SASSNet eq. 5


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean log D(u)`` over the unlabeled samples' logits: the segmenter wants its unlabeled maps judged real."""
    fake_logits = fake_logits.float().reshape(-1)
    if fake_logits.numel() == 0:
        raise ValueError("generator_loss needs at least one unlabeled sample")
    return F.softplus(-fake_logits).mean()  # SASSNet eq. 6 (non-saturating surrogate), SB-Net eq. 16


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Fraction of samples the discriminator classifies right (threshold 0 on the logit), for logs."""
    correct = (real_logits.detach() > 0).sum() + (fake_logits.detach() <= 0).sum()
    return float(correct) / max(1, real_logits.numel() + fake_logits.numel())


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``module``'s parameters have ``requires_grad=False`` (restored afterwards).

    A forward pass recorded inside the block still passes gradients to its *inputs*, but a later ``backward()``
    neither computes nor accumulates gradients for the module's parameters.
    """
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module`` is in eval mode (no dropout); its previous mode is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


__all__ = ["discriminator_loss", "generator_loss", "discriminator_accuracy", "frozen", "eval_mode"]
