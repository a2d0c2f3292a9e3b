"""UA-MT: uncertainty-aware mean teacher (Yu et al., MICCAI 2019; release ``yulequan/UA-MT``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from semisupseg.losses.consistency import (certainty_mask, masked_consistency, predictive_entropy,
                                           uncertainty_threshold)
from semisupseg.methods import register
from semisupseg.methods.base import StepContext
from semisupseg.methods.mean_teacher import (MeanTeacher, MeanTeacherParams, _require_teacher, teacher_input_noise,
                                             teacher_probabilities)
from semisupseg.nets import seg_probabilities


def mc_dropout_mean_probability(teacher: nn.Module, image: torch.Tensor, seg_form: str, generator: torch.Generator,
                                passes: int = 8, repeats: int = 2, noise_std: float = 0.1,
                                noise_clip: float = 0.2) -> torch.Tensor:
    """Mean class probabilities ``μ`` ``(B, C, Z, Y, X)`` of ``passes`` stochastic teacher predictions (UA-MT eq. 3).

    Each pass sees its own input noise ``clamp(N(0, 0.1^2), ±0.2)`` and its own dropout masks. As the release does,
    the batch is repeated ``repeats`` times and forwarded ``passes // repeats`` times (``volume_batch_r =
    unlabeled_volume_batch.repeat(2, 1, 1, 1, 1)``, ``T // 2`` forwards of ``2 B`` images), so batch-statistics
    normalisation sees the same batches as in the release. Dropout modules are switched to train mode for the
    passes (Monte-Carlo dropout) whatever mode the rest of the teacher is in. No gradients.
    """
    if passes < 1 or repeats < 1 or passes % repeats:
        raise ValueError(f"passes ({passes}) must be a positive multiple of repeats ({repeats})")
    dropout_modes = [(m, m.training) for m in teacher.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for m, _ in dropout_modes:
        m.train(True)
    try:
        batch = image.shape[0]
        stacked = image.repeat(repeats, *([1] * (image.dim() - 1)))
        total = None
        with torch.no_grad():
            for _ in range(passes // repeats):
                noisy = stacked + teacher_input_noise(stacked, generator, noise_std, noise_clip)
                prob = seg_probabilities(teacher(noisy)["seg"], seg_form).float()
                prob = prob.reshape(repeats, batch, *prob.shape[1:]).sum(dim=0)
                total = prob if total is None else total + prob
        return total / passes
    finally:
        for m, mode in dropout_modes:
            m.train(mode)


@dataclass
class UAMTParams(MeanTeacherParams):
    """UA-MT hyper-parameters: the Mean Teacher ones (same defaults, see :class:`MeanTeacherParams`) plus

    ``mc_passes`` T = 8 stochastic teacher passes, batched ``mc_repeats`` = 2 copies per forward (release);
    ``threshold_start`` 0.75: the threshold ramps from ``0.75 ln C`` to ``ln C`` with
    ``sigmoid_rampup(t, max_iterations)`` (release, on the raw iteration).
    """

    mc_passes: int = 8
    mc_repeats: int = 2
    threshold_start: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mc_passes < 1 or self.mc_repeats < 1 or self.mc_passes % self.mc_repeats:
            raise ValueError(f"mc_passes ({self.mc_passes}) must be a positive multiple of mc_repeats "
                             f"({self.mc_repeats})")
        if not 0.0 <= self.threshold_start <= 1.0:
            raise ValueError(f"threshold_start must be in [0, 1], got {self.threshold_start}")


@register
class UAMT(MeanTeacher):
    """UA-MT: the Mean Teacher consistency restricted to voxels where the teacher is certain.

    Equations (Yu et al. 2019)::

        L = 0.5 (CE + Dice)(student(x_l), y_l) + λ(t) · L_c                                     (1)
        θ'_t = α θ'_{t-1} + (1 - α) θ_t,  α = min(1 - 1/(t+1), 0.99)            (EMA, done by the engine)
        μ_c = (1/T) Σ_t p_t^c,  u = -Σ_c μ_c ln μ_c     (T = 8 noisy dropout passes of the teacher)     (3)
        L_c = Σ_v I(u_v < H) ||f_v - f'_v||^2 / Σ_v I(u_v < H)                                  (4)
        H(t) = (0.75 + 0.25 · sigmoid_rampup(t, t_max)) · ln 2,   λ(t) = 0.1 · sigmoid_rampup(t // P, 40),  P = 150 (0: t_max / 40)

    ``f'`` is **one** further noisy teacher pass (not the mean of the T passes), ``f`` the student's probabilities;
    the squared difference in (4) is summed over the classes and the release divides by ``2 Σ mask`` — the mean over
    certain voxels and the two classes — which :func:`~semisupseg.losses.consistency.masked_consistency` keeps
    (``C Σ mask`` for C classes).

    Release behaviours kept (``code/train_LA_meanteacher_certainty_unlabel.py``): uncertainty and consistency on the
    unlabeled patches only; the T passes batched as two copies of the unlabeled batch per forward; the teacher in
    train mode (dropout active, batch statistics); the threshold ramp runs over the whole training on the raw
    iteration count (``sigmoid_rampup(iter_num, max_iterations)``), the weight ramp on ``iter_num // 150`` (``rampup_period=0``: ``// (t_max / 40)``, the same at 6000 iterations);
    the student is built with dropout too (``has_dropout=True``).

    Deviations: ``ln C`` replaces ``ln 2`` for C classes (same value for two); the entropy is computed exactly
    (``0 ln 0 = 0``) instead of ``ln(μ + 1e-6)`` (difference < 2e-6 nats). Options as for Mean Teacher
    (``consistency_on="all"`` is the release's ``train_LA_meanteacher_certainty.py`` variant).

    Loss terms: ``ce``, ``dice``, ``consistency``; logs add ``threshold``, ``mask_fraction`` (certain voxels),
    ``uncertainty_mean``.
    """

    name = "ua-mt"
    description = "UA-MT: mean teacher with Monte-Carlo-dropout uncertainty-masked consistency (Yu 2019)"
    Params = UAMTParams
    uses_teacher = True
    needs_dropout = True

    def consistency_distance(self, student_prob: torch.Tensor, images: torch.Tensor,
                             ctx: StepContext) -> Tuple[torch.Tensor, Dict[str, float]]:
        p = self.params
        teacher = _require_teacher(ctx, self.name)
        noisy = images + teacher_input_noise(images, ctx.generator, p.noise_std, p.noise_clip)
        teacher_prob = teacher_probabilities(teacher, noisy, ctx.seg_form, p.teacher_train_mode)
        mean_prob = mc_dropout_mean_probability(teacher, images, ctx.seg_form, ctx.generator, p.mc_passes,
                                                p.mc_repeats, p.noise_std, p.noise_clip)
        uncertainty = predictive_entropy(mean_prob)  # eq. (3)
        threshold = uncertainty_threshold(ctx.iteration, ctx.max_iterations, student_prob.shape[1],
                                          p.threshold_start)
        mask = certainty_mask(uncertainty, threshold)
        dist = masked_consistency(student_prob, teacher_prob, mask)  # eq. (4)
        return dist, {"threshold": threshold, "mask_fraction": float(mask.mean()),
                      "uncertainty_mean": float(uncertainty.mean())}
