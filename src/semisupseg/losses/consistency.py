"""Consistency losses of the baseline methods (Mean Teacher, UA-MT, entropy minimisation, DTC), written once.

Every function takes **class probabilities** ``(B, C, Z, Y, X)`` (from :func:`semisupseg.nets.seg_probabilities`, so the
softmax and the sigmoid head forms are treated alike) and returns a scalar tensor computed in float32 (safe under bf16
autocast). Targets coming from a teacher must be passed already detached (computed under ``torch.no_grad``); the
functions do not detach for the caller, so a test can check where gradients go.

References (equation numbers of the papers):

* Mean Teacher: Tarvainen & Valpola, NeurIPS 2017 — squared-error consistency between student and EMA-teacher
  softmax outputs.
* UA-MT: Yu et al., "Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium segmentation",
  MICCAI 2019 — eq. (3) predictive entropy of the T-pass mean, eq. (4) uncertainty-masked MSE; release
  ``yulequan/UA-MT`` ``code/train_LA_meanteacher_certainty_unlabel.py``.
* Entropy minimisation: Vu et al., "ADVENT", CVPR 2019 (Sec. 3.1: the normalised entropy map and the direct
  entropy loss); the 3-D baseline of ``HiLab-git/SSL4MIS`` ``code/train_entropy_minimization_3D.py``
  (``losses.entropy_loss``).
* DTC: Luo et al., "Semi-supervised medical image segmentation through dual-task consistency", AAAI 2021 — eq. (2)
  the smooth Heaviside ``T^-1(z) = sigmoid(k z)`` (``k = -1500`` in the release because the SDM is negative inside),
  eq. (3) ``L_DTC``; release ``HiLab-git/DTC`` ``code/train_la_dtc.py``.
"""
from __future__ import annotations

import math

import torch

from semisupseg.geometry import entropy, smooth_heaviside
from semisupseg.schedules import sigmoid_rampup


def squared_prob_difference(student_prob: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """Element-wise ``(p_s - p_t)^2`` of two ``(B, C, ...)`` probability maps (the releases' ``softmax_mse_loss``)."""
    if student_prob.shape != teacher_prob.shape:
        raise ValueError(f"student and teacher probabilities differ in shape: {tuple(student_prob.shape)} vs "
                         f"{tuple(teacher_prob.shape)}")
    return (student_prob.float() - teacher_prob.float()) ** 2


def mean_teacher_consistency(student_prob: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """Mean Teacher MSE consistency: ``mean_{b,c,v} (p_s - p_t)^2`` over every element (release behaviour: the mean
    of ``softmax_mse_loss`` over batch, classes and voxels)."""
    return squared_prob_difference(student_prob, teacher_prob).mean()


def predictive_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Per-voxel entropy ``u = -Σ_c μ_c ln μ_c`` of ``(B, C, ...)`` probabilities → ``(B, 1, ...)``, in nats.

    UA-MT eq. (3) applied to the mean ``μ`` of the T stochastic teacher predictions. Uses the shared
    :func:`semisupseg.geometry.entropy` (exact ``0 ln 0 = 0``); the release writes ``ln(μ + 1e-6)``, which differs
    by less than ``C · 1e-6`` nats.
    """
    return entropy(prob.float(), axis=1).unsqueeze(1)


def uncertainty_threshold(iteration: int, max_iterations: int, num_classes: int = 2,
                          start: float = 0.75) -> float:
    """UA-MT's ramped threshold ``H = (start + (1 - start) · sigmoid_rampup(t, t_max)) · ln C`` (nats).

    The paper ramps ``H`` from ``0.75 U_max`` to ``U_max``, ``U_max`` the maximal uncertainty; the release writes
    ``(0.75 + 0.25 * ramps.sigmoid_rampup(iter_num, max_iterations)) * np.log(2)`` — the ramp runs over the whole
    training on the raw iteration (not ``iter // 150``). ``ln C`` generalises ``ln 2`` to ``C`` classes.
    """
    return float((start + (1.0 - start) * sigmoid_rampup(iteration, max_iterations)) * math.log(num_classes))


def certainty_mask(uncertainty: torch.Tensor, threshold: float) -> torch.Tensor:
    """``I(u < H)`` as a float ``0/1`` tensor of the shape of ``uncertainty`` (UA-MT eq. (4) indicator)."""
    return (uncertainty < threshold).float()


def masked_consistency(student_prob: torch.Tensor, teacher_prob: torch.Tensor, mask: torch.Tensor,
                       eps: float = 1e-16) -> torch.Tensor:
    """UA-MT eq. (4): ``Σ_v I(u_v < H) ||p_s,v - p_t,v||^2 / (C · Σ_v I(u_v < H))``.

    ``mask`` is ``(B, 1, ...)`` (broadcast over the ``C`` classes). The release divides the masked sum of the
    ``(B, C, ...)`` squared differences by ``2 * sum(mask) + 1e-16`` for its two classes, i.e. by ``C`` times the
    number of certain voxels: the mean over certain voxels and classes. An empty mask gives 0.
    """
    dist = squared_prob_difference(student_prob, teacher_prob)
    mask = mask.float()
    if mask.dim() != dist.dim() or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, ...) for probabilities {tuple(dist.shape)}, got {tuple(mask.shape)}")
    num_classes = dist.shape[1]
    return (mask * dist).sum() / (num_classes * mask.sum() + eps)


def entropy_minimization_loss(prob: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean voxel entropy ``mean_v (-Σ_c p_c log p_c)`` of ``(B, C, ...)`` probabilities (differentiable).

    ADVENT Sec. 3.1 / SSL4MIS ``entropy_loss``: in base ``C`` (the nats divided by ``ln C``, so in [0, 1]) when
    ``normalize`` (release default); in nats otherwise. The release's ``ln(p + 1e-6)`` is computed exactly here
    (shared :func:`semisupseg.geometry.entropy`), a difference below ``C · 1e-6``.
    """
    num_classes = prob.shape[1]
    return entropy(prob.float(), axis=1, base=num_classes if normalize else math.e).mean()


def dual_task_consistency(seg_prob: torch.Tensor, sdm: torch.Tensor, k: float = -1500.0) -> torch.Tensor:
    """DTC eq. (3): ``L_DTC = mean_{b,c,v} (p_c - sigmoid(k · sdm_c))^2`` over all voxels of all images.

    ``seg_prob`` ``(B, C, ...)`` class probabilities; ``sdm`` ``(B, C - 1, ...)`` predicted signed distance of each
    foreground class (negative inside). The foreground probabilities ``p_1..p_{C-1}`` are compared with the
    Heaviside-transformed SDM channels; for the release's binary sigmoid head this is exactly
    ``torch.mean((sigmoid(-1500 * out_tanh) - sigmoid(out_seg)) ** 2)``.
    """
    fg = seg_prob[:, 1:].float()
    if fg.shape != sdm.shape:
        raise ValueError(f"SDM {tuple(sdm.shape)} does not match the foreground probabilities {tuple(fg.shape)} "
                         "(the SDM head needs one channel per foreground class)")
    return ((smooth_heaviside(sdm.float(), k) - fg) ** 2).mean()  # DTC eq. (2) inside, eq. (3) outside
