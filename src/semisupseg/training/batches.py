"""Two-stream batch assembly: ``labeled_bs`` labeled patches first, then unlabeled ones (UA-MT's
``TwoStreamBatchSampler``), shardable over distributed processes without changing what is trained on.

Two decisions are separated:

* **which cases** — :class:`IndexStream`: the labeled cases are reshuffled every pass (a fresh permutation per pass;
  an incomplete tail is dropped as in the release's grouper, unless there are fewer cases than slots), the unlabeled
  cases cycle through permutations forever. The permutation of pass ``p`` is a pure function of
  ``(seed, stream, p)``, identical in every process, so the state is just ``(pass, position)``.
* **which patch of a case** — one :class:`~semisupseg.data.sampling.PatchSampler` per batch *slot* (global position in
  the batch), seeded from ``(seed, stream, slot)``. A process owns a contiguous range of slots; so a run on ``W``
  processes sees exactly the patches a single process sees with the same global batch, and every rank draws with
  its own distinct seeds.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from semisupseg.errors import InputError

#: stream ids used to derive seeds
LABELED, UNLABELED = 0, 1


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (``numpy.random.SeedSequence``), stable across platforms."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class IndexStream:
    """Case indices in passes; each pass is a permutation of ``range(n)`` seeded by ``(seed, stream, pass)``.

    :meth:`take` returns ``k`` indices. With ``drop_last`` (the labeled stream) a pass whose remaining indices
    cannot fill ``k`` is abandoned and the next permutation starts (only when ``n >= k``); otherwise (the unlabeled
    stream, or fewer cases than slots) indices run on into the next pass.
    """

    def __init__(self, n: int, seed: int, stream: int, drop_last: bool):
        if n < 1:
            raise ValueError("an index stream needs at least one case")
        self.n, self.seed, self.stream, self.drop_last = int(n), int(seed), int(stream), bool(drop_last)
        self.pass_index = 0
        self.position = 0
        self._perm = self._permutation(0)

    def _permutation(self, p: int) -> np.ndarray:
        return np.random.default_rng(derive_seed(self.seed, 7919, self.stream, p)).permutation(self.n)

    def _next_pass(self) -> None:
        self.pass_index += 1
        self.position = 0
        self._perm = self._permutation(self.pass_index)

    def take(self, k: int) -> List[int]:
        out: List[int] = []
        if self.drop_last and self.n >= k and self.n - self.position < k:
            self._next_pass()
        while len(out) < k:
            if self.position >= self.n:
                self._next_pass()
            need = k - len(out)
            chunk = self._perm[self.position:self.position + need]
            out.extend(int(i) for i in chunk)
            self.position += len(chunk)
        return out

    def state_dict(self) -> Dict[str, int]:
        return {"n": self.n, "pass": self.pass_index, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"index stream state is for {state['n']} cases, this run has {self.n}")
        self.pass_index = int(state["pass"])
        self.position = int(state["position"])
        self._perm = self._permutation(self.pass_index)


def _default_sampler_factory(cases: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]], patch_size_zyx, seed: int,
                             augment, foreground_prob: float, use_labels: bool = True, perturb: str = "none"):
    from semisupseg.data.sampling import PatchSampler

    return PatchSampler(cases, patch_size_zyx, seed=seed, augment=augment, foreground_prob=foreground_prob,
                        use_labels=use_labels, perturb=perturb)


def _accepts_index(factory: Callable) -> bool:
    """Whether the samplers ``factory`` builds take a case index in ``sample(index)``."""
    if factory is _default_sampler_factory:
        from semisupseg.data.sampling import PatchSampler

        sample = PatchSampler.sample
        skip = 1
    else:
        sample = getattr(factory, "sample_accepts_index", None)
        return bool(sample)
    try:
        params = list(inspect.signature(sample).parameters)[skip:]
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] in ("index", "case", "case_index", "i")


def pad_for_sampling(array: np.ndarray, patch_size_zyx: Sequence[int], augment) -> np.ndarray:
    """Zero-pad ``array`` (``(..., Z, Y, X)``) once so every (rotated, when the augmentation policy ``augment``
    rotates) patch fits; the samplers then share it."""
    from semisupseg.data.augment import rotates
    from semisupseg.data.preprocess import pad_to_size

    pz, py, px = (int(v) for v in patch_size_zyx)
    need = (pz, max(py, px), max(py, px)) if rotates(augment) else (pz, py, px)
    return pad_to_size(array, need)[0]


class _SlotSampler:
    """The patches of one batch slot: crops of the case it is told to use, from its own seeded sampler(s).

    Uses ``sampler.sample(index)`` when the sampler accepts a case index; otherwise keeps one single-case sampler
    per case (created lazily, seeded by ``(slot seed, case)``; the case arrays are shared, not copied).
    """

    def __init__(self, cases, patch_size_zyx, seed: int, augment, foreground_prob: float, factory,
                 use_labels: bool, perturb: str = "none"):
        self.cases, self.patch, self.seed = cases, tuple(patch_size_zyx), int(seed)
        self.augment, self.foreground_prob, self.factory = augment, foreground_prob, factory
        self.use_labels = use_labels
        # only a perturbing run passes the keyword: factories written before it existed keep working
        self.extra = {} if perturb == "none" else {"perturb": perturb}
        self.shared = None
        self.per_case: Dict[int, Any] = {}
        if _accepts_index(factory):
            self.shared = factory(cases, self.patch, self.seed, augment, foreground_prob, use_labels, **self.extra)
        self._pending: Dict[int, Any] = {}

    def _case_sampler(self, index: int):
        s = self.per_case.get(index)
        if s is None:
            s = self.factory([self.cases[index]], self.patch, derive_seed(self.seed, index), self.augment,
                             self.foreground_prob, self.use_labels, **self.extra)
            if index in self._pending:
                s.load_state_dict(self._pending.pop(index))
            self.per_case[index] = s
        return s

    def sample(self, index: int):
        if self.shared is not None:
            return self.shared.sample(index)
        return self._case_sampler(index).sample()

    def state_dict(self) -> Dict[str, Any]:
        if self.shared is not None:
            return {"shared": self.shared.state_dict()}
        states = {str(i): st for i, st in self._pending.items()}
        states.update({str(i): s.state_dict() for i, s in self.per_case.items()})
        return {"per_case": states}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if ("shared" in state) != (self.shared is not None):
            raise ValueError("sampler state was saved by a different kind of patch sampler")
        if self.shared is not None:
            self.shared.load_state_dict(state["shared"])
            return
        self.per_case = {}
        self._pending = {int(k): v for k, v in state.get("per_case", {}).items()}


class TwoStreamBatcher:
    """Global batches of ``labeled_bs`` labeled + ``unlabeled_bs`` unlabeled patches; this process assembles its
    shard (``labeled_bs / world_size`` labeled then ``unlabeled_bs / world_size`` unlabeled).

    ``labeled``: cases as ``(image (C, Z, Y, X) float32, label (Z, Y, X) int64)``; ``unlabeled``: ``(image, None)``.
    ``patch_size_zyx`` voxels. ``sampler_factory(cases, patch_size_zyx, seed, augment, foreground_prob,
    use_labels)`` builds a patch sampler (default: :class:`semisupseg.data.sampling.PatchSampler`); with a
    ``perturb`` policy other than ``"none"`` (:mod:`semisupseg.data.perturb`) it is also given ``perturb=``.

    :meth:`next` → ``(image (b, C, Z, Y, X) float32, label (l, Z, Y, X) int64)`` numpy arrays of this shard.
    :meth:`state_dict` is JSON-able (stored in the resume file) and covers every slot of the **global** batch only
    for this process's slots; the engine gathers the shards.
    """

    def __init__(self, labeled: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]],
                 unlabeled: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]],
                 labeled_bs: int, unlabeled_bs: int, patch_size_zyx: Sequence[int], seed: int,
                 rank: int = 0, world_size: int = 1, augment="none", foreground_prob: float = 0.0,
                 sampler_factory: Optional[Callable] = None, perturb: str = "none"):
        if labeled_bs < 1:
            raise InputError("the labeled batch size must be >= 1")
        if not labeled:
            raise InputError("no labeled training cases")
        if unlabeled_bs > 0 and not unlabeled:
            raise InputError(f"the batch has {unlabeled_bs} unlabeled patch(es) but there are no unlabeled cases: "
                             "give unlabeled images (--unlabeled DIR or data.unlabeled), keep only some training "
                             "cases labeled (--num-labeled N or data.num_labeled, or a split's labeled list with "
                             "--split-labeled KEY), or train on labeled patches only (--labeled-batch-size equal to "
                             "--batch-size, i.e. labeled_batch_size = batch_size)")
        if labeled_bs % world_size or unlabeled_bs % world_size:
            raise InputError(f"labeled ({labeled_bs}) and unlabeled ({unlabeled_bs}) batch sizes must both be "
                             f"divisible by the number of processes ({world_size})")
        factory = sampler_factory or _default_sampler_factory
        # pad once here so the per-slot samplers share the arrays instead of each padding a copy
        labeled = [(pad_for_sampling(im, patch_size_zyx, augment), pad_for_sampling(lb, patch_size_zyx, augment))
                   for im, lb in labeled]
        unlabeled = [(pad_for_sampling(im, patch_size_zyx, augment), None) for im, _ in unlabeled] if unlabeled_bs \
            else []
        self.labeled_bs, self.unlabeled_bs = int(labeled_bs), int(unlabeled_bs)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.labeled_stream = IndexStream(len(labeled), seed, LABELED, drop_last=True)
        self.unlabeled_stream = IndexStream(len(unlabeled), seed, UNLABELED, drop_last=False) if unlabeled_bs else None
        lpr, upr = labeled_bs // world_size, unlabeled_bs // world_size
        self.labeled_slots = list(range(rank * lpr, (rank + 1) * lpr))
        self.unlabeled_slots = list(range(rank * upr, (rank + 1) * upr))
        self.labeled_samplers = {s: _SlotSampler(labeled, patch_size_zyx, derive_seed(seed, LABELED, s), augment,
                                                 foreground_prob, factory, True, perturb)
                                 for s in self.labeled_slots}
        self.unlabeled_samplers = {s: _SlotSampler(unlabeled, patch_size_zyx, derive_seed(seed, UNLABELED, s),
                                                   augment, 0.0, factory, False, perturb)
                                   for s in self.unlabeled_slots}

    @property
    def local_labeled_bs(self) -> int:
        return len(self.labeled_slots)

    def next(self) -> Tuple[np.ndarray, np.ndarray]:
        images: List[np.ndarray] = []
        labels: List[np.ndarray] = []
        l_idx = self.labeled_stream.take(self.labeled_bs)  # the whole global batch, identical on every rank
        for slot in self.labeled_slots:
            image, label = self.labeled_samplers[slot].sample(l_idx[slot])
            if label is None:
                raise InputError("a labeled case produced a patch without label")
            images.append(np.asarray(image, dtype=np.float32))
            labels.append(np.asarray(label, dtype=np.int64))
        if self.unlabeled_stream is not None:
            u_idx = self.unlabeled_stream.take(self.unlabeled_bs)
            for slot in self.unlabeled_slots:
                image, _ = self.unlabeled_samplers[slot].sample(u_idx[slot])
                images.append(np.asarray(image, dtype=np.float32))
        return np.stack(images), np.stack(labels)

    # --- resume ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "labeled_stream": self.labeled_stream.state_dict(),
            "unlabeled_stream": None if self.unlabeled_stream is None else self.unlabeled_stream.state_dict(),
            "labeled_slots": {str(s): smp.state_dict() for s, smp in self.labeled_samplers.items()},
            "unlabeled_slots": {str(s): smp.state_dict() for s, smp in self.unlabeled_samplers.items()},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.labeled_stream.load_state_dict(state["labeled_stream"])
        if self.unlabeled_stream is not None and state.get("unlabeled_stream") is not None:
            self.unlabeled_stream.load_state_dict(state["unlabeled_stream"])
        for key, samplers in (("labeled_slots", self.labeled_samplers), ("unlabeled_slots", self.unlabeled_samplers)):
            saved = state.get(key, {})
            for s, smp in samplers.items():
                if str(s) in saved:
                    smp.load_state_dict(saved[str(s)])


def merge_shard_states(states: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One batcher state from every process's :meth:`TwoStreamBatcher.state_dict` (slots are disjoint)."""
    merged = dict(states[0])
    merged["labeled_slots"] = {}
    merged["unlabeled_slots"] = {}
    for st in states:
        merged["labeled_slots"].update(st["labeled_slots"])
        merged["unlabeled_slots"].update(st["unlabeled_slots"])
    return merged


def to_json_text(obj: Any) -> str:
    """JSON text of a state (numpy scalars/arrays converted), for storing in a ``weights_only`` resume file."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return {"__ndarray__": o.tolist(), "dtype": str(o.dtype)}
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        raise TypeError(f"cannot store {type(o).__name__} in a resume state")

    return json.dumps(obj, default=default)


def from_json_text(text: str) -> Any:
    def hook(d: Dict[str, Any]) -> Any:
        if "__ndarray__" in d and "dtype" in d and len(d) == 2:
            return np.asarray(d["__ndarray__"], dtype=d["dtype"])
        return d

    return json.loads(text, object_hook=hook)


__all__ = ["IndexStream", "TwoStreamBatcher", "derive_seed", "merge_shard_states", "to_json_text",
           "from_json_text"]
