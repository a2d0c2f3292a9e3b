"""Post-processing of label maps: keep the largest connected component per class (the releases' "NMS")."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage

from semisupseg.volume import Volume

#: neighbourhoods for connected components: 1 = faces (6-connected), 2 = +edges (18), 3 = +corners (26)
CONNECTIVITIES = (1, 2, 3)


def largest_component(mask: np.ndarray, connectivity: int = 3) -> np.ndarray:
    """The largest connected component of a boolean ``(Z, Y, X)`` mask (empty mask → empty mask).

    Ties between equally large components keep the one found first in z, y, x scan order.
    """
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    components, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def keep_largest_component(
    labels: Union[np.ndarray, Volume],
    classes: Optional[Sequence[int]] = None,
    background: int = 0,
    connectivity: int = 3,
) -> Union[np.ndarray, Volume]:
    """Keep only the largest connected component of each class; the other voxels of that class become
    ``background``.

    ``labels``: a ``(Z, Y, X)`` label array (or a :class:`Volume`, returned as a Volume with the same geometry).
    ``classes``: the label values to process (default: every value present except ``background``).
    ``connectivity``: 3 (26-neighbourhood, default, as ``skimage.measure.label`` that the releases use), 2 or 1.
    """
    if isinstance(labels, Volume):
        return labels.with_array(keep_largest_component(labels.array, classes, background, connectivity))
    arr = np.asarray(labels)
    out = arr.copy()
    values = [int(v) for v in np.unique(arr)] if classes is None else [int(c) for c in classes]
    for value in values:
        if value == background:
            continue
        mask = arr == value
        if not mask.any():
            continue
        out[mask & ~largest_component(mask, connectivity)] = background
    return out


#: where an SDM comes from (``SegmentationResult.sdm_source``, overlay names, snapshot metadata)
SDM_FROM_HEAD = "SDM head"
SDM_FROM_LABELS = "predicted segmentation"


def segmentation_sdm(labels: np.ndarray, label_values: Sequence[int],
                     spacing_zyx: Optional[Sequence[float]] = None) -> np.ndarray:
    """Signed distance map of a label map, one channel per foreground class: ``(C-1, Z, Y, X)`` float32.

    ``labels``: ``(Z, Y, X)`` with the values ``label_values`` (background first); ``spacing_zyx``: voxel size in mm,
    **z, y, x** order, so distances follow the anatomy on anisotropic grids. Same normalisation as the SDM heads'
    regression target (seed paper eq. 1, :func:`semisupseg.geometry.class_sdm`): in [-1, 1], negative inside, 0 on
    the boundary; a class that is absent is +1 everywhere. The SDM overlay of a network without an SDM head.
    """
    from semisupseg.data.cases import ClassInfo
    from semisupseg.geometry import class_sdm

    values = [int(v) for v in label_values]
    index = ClassInfo([str(v) for v in values], values).to_indices(np.asarray(labels))  # names are not used here
    return np.asarray(class_sdm(index, len(values), spacing=spacing_zyx), dtype=np.float32)
