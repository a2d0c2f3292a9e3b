"""Inference: sliding windows with bounded memory, the fast CPU path, whole-image segmentation, post-processing.

* :func:`sliding_window_inference` — class probabilities (and SDM) of a normalised image on the model's grid;
* :func:`segment` — Volume in, :class:`SegmentationResult` (labels, probabilities, SDM, entropy) out, in the input
  geometry, with :class:`SegmentOptions`;
* :func:`keep_largest_component` — the releases' largest-connected-component post-processing;
* :func:`segmentation_sdm` — the SDM of a label map (the SDM overlay of a network without an SDM head).
"""
from __future__ import annotations

from semisupseg.inference.postprocess import (SDM_FROM_HEAD, SDM_FROM_LABELS, keep_largest_component,
                                              largest_component, segmentation_sdm)
from semisupseg.inference.segment import (SegmentationResult, SegmentOptions, segment, trained_flip_axes,
                                          tta_axes_for_model)
from semisupseg.inference.sliding_window import (
    BLENDS,
    FAST_MIN_DICE,
    LAYOUTS,
    PAPERS_STRIDE_ZYX,
    WHOLE_MAX_VOXELS,
    clear_fast_path_cache,
    even_window_starts,
    fold_conv_batchnorm,
    importance_map,
    label_agreement,
    release_window_starts,
    sliding_window_inference,
    window_positions,
)

__all__ = [
    "sliding_window_inference", "segment", "SegmentationResult", "SegmentOptions", "keep_largest_component",
    "largest_component", "window_positions", "release_window_starts", "even_window_starts", "importance_map",
    "label_agreement", "clear_fast_path_cache", "fold_conv_batchnorm", "PAPERS_STRIDE_ZYX", "LAYOUTS", "BLENDS",
    "FAST_MIN_DICE", "WHOLE_MAX_VOXELS", "trained_flip_axes", "tta_axes_for_model", "segmentation_sdm",
    "SDM_FROM_HEAD", "SDM_FROM_LABELS",
]
