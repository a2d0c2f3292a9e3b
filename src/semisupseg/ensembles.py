"""Combine trained model files into one ensemble model file (``semisupseg ensemble``).

The ensemble (:class:`semisupseg.nets.ensemble.EnsembleNet`) averages its members' class probabilities; its file is an
ordinary model file (weights under ``members.<k>.``, one card), so ``segment``, ``info``, the catalogue and the
Slicer modules take it like any model. The members must preprocess alike, since one image is resampled and
normalised once for all of them: the same classes and label values, input channels, voxel spacing, intensity
normalisation and window (patch) size. Anything else differing is a :class:`CheckpointError` naming the member file.

The card: ``method`` is the members' method when they share one, else ``"ensemble"``; ``training`` takes the
members' common values of :data:`COMMON_TRAINING_KEYS` (augmentation ``"none"`` when their flips differ, so no flip
TTA is used by default that some member never trained on), the first member's data description and statistics (for
``segment``'s domain warnings), and each member's summary (``training["members"]``: file name, method, network,
seed, iterations, labeled and unlabeled case counts, its own test figures, ...); ``inference`` recommends the
largest-component step when every member's card does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from torch import nn

from semisupseg.checkpoint import DATA_KEYS, CheckpointError, ModelCard, load_model, make_card
from semisupseg.training.heartbeat import KEPT_DIR, RUN_MODEL_FILES

PathLike = Union[str, "os.PathLike[str]"]

#: card fields the members must share (the image is preprocessed once for all of them)
SHARED_FIELDS = ("class_names", "label_values", "in_channels", "spacing_xyz", "normalization", "patch_size_xyz")
#: the members' training summaries keep these keys (the rest, e.g. per-iteration statistics, stays in their files)
MEMBER_SUMMARY_KEYS = ("seed", "iterations", "labeled_cases", "unlabeled_cases", "augmentation", "perturb",
                       "method_params", "test", "weights_stored_as")

#: training-summary keys that become the ensemble's own when every member has the same value (the flips it was trained
#: on decide segment's flip TTA; the counts are what the Slicer panel and the demo print)
COMMON_TRAINING_KEYS = ("augmentation", "perturb", "labeled_cases", "unlabeled_cases", "iterations")

__all__ = ["combine_models", "SHARED_FIELDS"]


def _member_file(path: Path) -> str:
    """A member's file name; one a training run wrote (``RUN/last.pt``, ``RUN/best.pt``, ``RUN/kept/it001000.pt``)
    with its run folder, which is what tells such members apart."""
    if path.name in RUN_MODEL_FILES:
        return f"{path.parent.name}/{path.name}"
    if path.parent.name == KEPT_DIR:
        return f"{path.parent.parent.name}/{KEPT_DIR}/{path.name}"
    return path.name


def _member_summary(path: Path, card: ModelCard) -> Dict[str, Any]:
    summary: Dict[str, Any] = {"file": _member_file(path), "method": card.method, "arch": card.arch,
                               "network": dict(card.network)}
    for key in MEMBER_SUMMARY_KEYS:
        if key in card.training:
            summary[key] = card.training[key]
    return summary


def combine_models(paths: Sequence[PathLike]) -> Tuple[nn.Module, ModelCard]:
    """``(ensemble network in eval mode on the CPU, its card)`` of the model files ``paths`` (2-8, in order)."""
    from semisupseg.nets.ensemble import MAX_MEMBERS, EnsembleConfig, EnsembleNet

    paths = [Path(p) for p in paths]
    if not 2 <= len(paths) <= MAX_MEMBERS:
        raise CheckpointError(f"an ensemble takes 2-{MAX_MEMBERS} model files, got {len(paths)}",
                              paths[0] if paths else Path("."))
    loaded: List[Tuple[Path, nn.Module, ModelCard]] = []
    for path in paths:
        model, card = load_model(path)
        if card.arch == "ensemble":
            raise CheckpointError("is itself an ensemble: pass its member files instead", path)
        loaded.append((path, model, card))
    first_path, _, first = loaded[0]
    for path, _, card in loaded[1:]:
        for name in SHARED_FIELDS:
            a, b = getattr(first, name), getattr(card, name)
            if a != b:
                raise CheckpointError(f"cannot join an ensemble with {first_path}: its {name} is {b!r}, "
                                      f"that of {first_path} is {a!r} (members must preprocess alike)", path)
    orientations = {c.inference.get("orientation") or "" for _, _, c in loaded}
    if len(orientations) > 1:  # the members would each need the scan in another voxel order
        raise CheckpointError("cannot join an ensemble: the members were trained on scans stored in different voxel "
                              f"orders ({', '.join(sorted(o or 'unknown' for o in orientations))})", paths[0])
    sdm = all(bool(getattr(m.config, "sdm_head", False)) for _, m, _ in loaded)
    config = EnsembleConfig(members=[{"arch": c.arch, "config": dict(c.network)} for _, _, c in loaded],
                            in_channels=first.in_channels, num_classes=first.num_classes, sdm_head=sdm)
    net = EnsembleNet(config)
    for member, (_, model, _) in zip(net.members, loaded):
        member.load_state_dict(model.state_dict(), strict=True)
    net.eval()
    methods = {c.method for _, _, c in loaded}
    training: Dict[str, Any] = {}
    for key in COMMON_TRAINING_KEYS:  # what the members agree on reads as the ensemble's own
        values = [c.training.get(key) for _, _, c in loaded]
        if values[0] is not None and all(v == values[0] for v in values):
            training[key] = values[0]
    if "augmentation" not in training:  # differing flips: no flip TTA (a flip one member never saw would mislead)
        training["augmentation"] = "none"
    for key in DATA_KEYS:  # the first member's, for the domain checks and the data's origin
        if key in first.training:
            training[key] = first.training[key]
    training["ensemble_of"] = len(loaded)
    training["members"] = [_member_summary(p, c) for p, _, c in loaded]
    keep_largest = all(bool(c.inference.get("keep_largest", False)) for _, _, c in loaded)
    inference: Dict[str, Any] = {"keep_largest": True} if keep_largest else {}
    if orientations != {""}:
        inference["orientation"] = orientations.pop()
    card = make_card(net, method=methods.pop() if len(methods) == 1 else "ensemble", spacing_xyz=first.spacing_xyz,
                     patch_size_xyz=first.patch_size_xyz, class_names=first.class_names,
                     label_values=first.label_values, normalization=first.normalization, training=training,
                     inference=inference)
    return net, card
