"""Seeded, resumable patch samplers for the labeled and the unlabeled stream.

A :class:`PatchSampler` holds preprocessed cases in memory and returns random patches of ``patch_size_zyx``:

1. case order: a random permutation of the cases, consumed one case per patch and redrawn when used up (what the
   reference ``TwoStreamBatchSampler`` does for both streams);
2. spatial augmentation by a policy of :mod:`semisupseg.data.augment` (``"none"``, ``"dihedral"``: any of the 8
   in-plane symmetries, ``"papers"``: the releases' ``RandomRotFlip``, reflections only), after the optional
   orientation-preserving perturbation of :mod:`semisupseg.data.perturb` (small rotations and zooms resampled
   from the case about the crop's centre, intensity changes);
3. crop: uniformly random position (the papers' ``RandomCrop``), or — with probability ``foreground_prob`` on
   labeled cases — centred on a random foreground voxel (a foreground class drawn uniformly among those present,
   then a voxel of it), clamped to the volume.

Rotation happens on the patch, not the volume: the crop is taken in the un-rotated frame with y/x sizes swapped
when ``k`` is odd, then rotated. Because crop positions are uniform this has exactly the distribution of
"rotate the volume, then crop", for a fraction of the work. Volumes smaller than the patch (in y/x: smaller than
the larger of the two in-plane sizes, so every rotation fits) are zero-padded centrally once, at construction
(the reference crop pads with zeros too, there with a 3-voxel extra margin).

Randomness comes from one ``numpy.random.Generator`` (PCG64) per sampler. :meth:`PatchSampler.state_dict` holds
only Python ints, lists and strings (JSON- and ``torch.load(weights_only=True)``-safe), so a resumed run draws
exactly the patches the uninterrupted run would have drawn.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg.data.augment import augmentation_name, draw_rot_flip, rot_flip, rotates
from semisupseg.data.cases import LoadedCase
from semisupseg.data.perturb import perturb_patch, perturbation_name
from semisupseg.data.preprocess import pad_to_size
from semisupseg.errors import InputError

__all__ = ["PatchSampler", "TwoStreamSampler"]

CaseLike = Union[LoadedCase, np.ndarray, Tuple[np.ndarray, Optional[np.ndarray]]]

#: foreground voxels remembered per class and case (regular subsample beyond this; keeps memory bounded)
_MAX_FG = 200_000


def _as_arrays(case: CaseLike) -> Tuple[str, np.ndarray, Optional[np.ndarray]]:
    if isinstance(case, LoadedCase):
        cid, image, label = case.case_id, case.image, case.label
    elif isinstance(case, tuple):
        cid, image, label = "", case[0], case[1]
    else:
        cid, image, label = "", case, None
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise InputError(f"case {cid!r}: image must be (C, Z, Y, X) or (Z, Y, X), got shape {image.shape}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[1:]:
            raise InputError(f"case {cid!r}: label shape {label.shape} != image shape {image.shape[1:]}")
    return cid, image, label


class PatchSampler:
    """Random (augmented) patches from in-memory cases.

    ``cases``: a sequence whose items are any of

    * :class:`~semisupseg.data.cases.LoadedCase` (its ``image`` and ``label``),
    * a tuple ``(image, label)``: ``image`` a numpy array ``(C, Z, Y, X)`` (or ``(Z, Y, X)``, then C = 1)
      float32, normalised; ``label`` a numpy integer array ``(Z, Y, X)`` of class indices (any integer dtype,
      uint8/int64) or ``None``,
    * a bare image array (unlabeled).

    Arrays are used in place (not copied) unless they must be padded or cast to float32. ``patch_size_zyx``:
    patch size in voxels, **z, y, x**. ``seed``: the generator's seed. ``augment``: the spatial augmentation
    policy (a name of :data:`semisupseg.data.augment.AUGMENTATIONS`; ``True``/``False`` = ``"papers"``/``"none"``).
    ``foreground_prob``: probability of a foreground-centred crop (labeled cases only). ``use_labels=False``
    makes an unlabeled stream (labels, if any, are dropped at construction). ``perturb``: an orientation-preserving
    perturbation policy of :mod:`semisupseg.data.perturb` (``"none"``, ``"intensity"``, ``"spatial"``,
    ``"both"``), applied to the crop before the symmetry of ``augment``; ``"none"`` draws nothing, so runs made
    before it existed resume identically.

    :meth:`sample` returns ``(image (C, z, y, x) float32, label (z, y, x) int64 or None)``; :meth:`sample_batch`
    stacks ``n`` of them.
    """

    def __init__(
        self,
        cases: Sequence[CaseLike],
        patch_size_zyx: Sequence[int],
        seed: int = 0,
        augment: Union[str, bool] = "none",
        foreground_prob: float = 0.0,
        use_labels: bool = True,
        perturb: str = "none",
    ):
        if len(cases) == 0:
            raise InputError("PatchSampler needs at least one case")
        self.patch_size = tuple(int(s) for s in patch_size_zyx)
        if len(self.patch_size) != 3 or any(s <= 0 for s in self.patch_size):
            raise InputError(f"patch size must be 3 positive ints (z, y, x), got {tuple(patch_size_zyx)}")
        if not 0.0 <= float(foreground_prob) <= 1.0:
            raise InputError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
        try:
            self.augment = augmentation_name(augment)
            self.perturb = perturbation_name(perturb)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self.foreground_prob = float(foreground_prob)
        self.use_labels = bool(use_labels)
        self.seed = int(seed)
        pz, py, px = self.patch_size
        need = (pz, max(py, px), max(py, px)) if rotates(self.augment) else (pz, py, px)
        self.case_ids: List[str] = []
        self.images: List[np.ndarray] = []
        self.labels: List[Optional[np.ndarray]] = []
        self._fg: List[List[np.ndarray]] = []
        channels = None
        for case in cases:
            cid, image, label = _as_arrays(case)
            if not self.use_labels:
                label = None
            elif label is None:
                raise InputError(f"case {cid!r} has no label but the sampler is labeled (use_labels=True)")
            if channels is None:
                channels = image.shape[0]
            elif image.shape[0] != channels:
                raise InputError(f"case {cid!r} has {image.shape[0]} channels, others {channels}")
            image, _ = pad_to_size(image, need)
            if label is not None:
                label, _ = pad_to_size(label, need)
            self.case_ids.append(cid)
            self.images.append(np.asarray(image, dtype=np.float32))
            self.labels.append(label)
            self._fg.append(self._foreground(label) if (label is not None and self.foreground_prob > 0) else [])
        self.rng = np.random.default_rng(self.seed)
        self._order: List[int] = []
        self._pos = 0

    # --- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _foreground(label: np.ndarray) -> List[np.ndarray]:
        """Flat indices of each present foreground class (regularly subsampled beyond ``_MAX_FG``)."""
        out = []
        for c in np.unique(label):
            if c == 0:
                continue
            idx = np.flatnonzero(label == c)
            if idx.size > _MAX_FG:
                idx = idx[:: int(np.ceil(idx.size / _MAX_FG))]
            out.append(idx)
        return out

    @property
    def num_cases(self) -> int:
        return len(self.images)

    @property
    def in_channels(self) -> int:
        return int(self.images[0].shape[0])

    def _next_case(self) -> int:
        if self._pos >= len(self._order):
            self._order = [int(i) for i in self.rng.permutation(self.num_cases)]
            self._pos = 0
        i = self._order[self._pos]
        self._pos += 1
        return i

    def _start(self, i: int, size: Tuple[int, int, int]) -> Tuple[int, int, int]:
        shape = self.images[i].shape[1:]
        fg = self._fg[i]
        if fg and self.foreground_prob > 0 and float(self.rng.random()) < self.foreground_prob:
            cls_idx = fg[int(self.rng.integers(0, len(fg)))]
            flat = int(cls_idx[int(self.rng.integers(0, cls_idx.size))])
            centre = np.unravel_index(flat, shape)
            return tuple(int(min(max(c - s // 2, 0), n - s)) for c, s, n in zip(centre, size, shape))  # type: ignore
        return tuple(int(self.rng.integers(0, n - s + 1)) for s, n in zip(size, shape))  # type: ignore

    # --- sampling --------------------------------------------------------------------------------------------
    def sample(self, index: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """One patch: ``(image (C, z, y, x) float32, label (z, y, x) int64 or None)``.

        ``index``: crop from that case (the caller owns the case order, e.g. the engine's two-stream batcher);
        ``None``: the next case of the sampler's own shuffled order. Either way the crop position and the
        augmentation come from this sampler's generator.
        """
        if index is None:
            i = self._next_case()
        else:
            i = int(index)
            if not 0 <= i < self.num_cases:
                raise InputError(f"case index {index} out of range 0..{self.num_cases - 1}")
        k, axis = draw_rot_flip(self.rng, self.augment)
        pz, py, px = self.patch_size
        size = (pz, px, py) if k % 2 else (pz, py, px)
        z0, y0, x0 = self._start(i, size)
        sl = (slice(z0, z0 + size[0]), slice(y0, y0 + size[1]), slice(x0, x0 + size[2]))
        image = self.images[i][(slice(None),) + sl]
        label = self.labels[i]
        lab = None if label is None else label[sl]
        if self.perturb != "none":
            image, lab = perturb_patch(self.images[i], label, (z0, y0, x0), size, self.rng, self.perturb, image, lab)
        image = rot_flip(image, k, axis)
        lab = None if lab is None else rot_flip(lab, k, axis).astype(np.int64)
        return image, lab

    def sample_batch(self, n: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``n`` patches stacked: ``(images (n, C, z, y, x) float32, labels (n, z, y, x) int64 or None)``."""
        pairs = [self.sample() for _ in range(int(n))]
        images = np.stack([p[0] for p in pairs])
        labels = None if pairs[0][1] is None else np.stack([p[1] for p in pairs])
        return images, labels

    def __iter__(self):
        while True:
            yield self.sample()

    # --- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The sampler's position: plain ints/lists/strings only (JSON and weights_only safe)."""
        bg = self.rng.bit_generator.state
        return {
            "format": 1,
            "bit_generator": _plain(bg),
            "order": [int(i) for i in self._order],
            "pos": int(self._pos),
            "num_cases": int(self.num_cases),
            "seed": int(self.seed),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the cases must be the same, in the same order)."""
        if int(state.get("num_cases", -1)) != self.num_cases:
            raise InputError(f"sampler state is for {state.get('num_cases')} cases, this sampler has "
                             f"{self.num_cases}: the data changed since the run was saved")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = _plain(state["bit_generator"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid sampler state: {exc}") from exc
        self.rng = rng
        self._order = [int(i) for i in state["order"]]
        self._pos = int(state["pos"])


def _plain(obj: Any) -> Any:
    """Deep copy of a bit-generator state with numpy scalars/arrays turned into Python ints/lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


class TwoStreamSampler:
    """Two-stream batches as in the reference papers: ``labeled_bs`` labeled patches first, then
    ``batch_size - labeled_bs`` unlabeled ones.

    :meth:`next` returns ``(images (B, C, z, y, x) float32, labels (labeled_bs, z, y, x) int64)`` numpy arrays,
    ready for ``torch.from_numpy`` and :class:`semisupseg.methods.base.Batch`.
    """

    def __init__(self, labeled: PatchSampler, unlabeled: PatchSampler, batch_size: int, labeled_bs: int):
        if not 0 < int(labeled_bs) <= int(batch_size):
            raise InputError(f"labeled batch size {labeled_bs} must be in 1..batch size {batch_size}")
        if labeled.patch_size != unlabeled.patch_size:
            raise InputError("labeled and unlabeled samplers must use the same patch size")
        if labeled.in_channels != unlabeled.in_channels:
            raise InputError("labeled and unlabeled cases have different channel counts")
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.batch_size = int(batch_size)
        self.labeled_bs = int(labeled_bs)

    def next(self) -> Tuple[np.ndarray, np.ndarray]:
        li, ll = self.labeled.sample_batch(self.labeled_bs)
        n_un = self.batch_size - self.labeled_bs
        if n_un == 0:
            return li, ll  # type: ignore[return-value]
        ui, _ = self.unlabeled.sample_batch(n_un)
        return np.concatenate([li, ui]), ll  # type: ignore[return-value]

    def state_dict(self) -> Dict[str, Any]:
        return {"labeled": self.labeled.state_dict(), "unlabeled": self.unlabeled.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.labeled.load_state_dict(state["labeled"])
        self.unlabeled.load_state_dict(state["unlabeled"])
