"""Model files: network weights plus a JSON model card, in one ``.pt`` file that loads without executing code.

File format (``FORMAT_VERSION`` 1)
----------------------------------
A model file is written with :func:`torch.save` and read only with ``torch.load(..., weights_only=True)``. Its payload
is a plain dict::

    {"semisupseg_format": 1,                 # int: format version (a newer version is refused with a clear error)
     "metadata": "<JSON text of the ModelCard>",
     "state_dict": {"block_one.conv.0.weight": <tensor>, ...}}   # the network's state_dict, CPU, contiguous

Only tensors, strings, numbers and containers are stored, so a file cannot carry code. The card is a JSON *string*
(not a nested dict) so it survives any reader exactly and can be shown without building the network.

Beside ``model.pt``, :func:`save_model` also writes ``model.json`` (the same card, indented) for humans, the Slicer
module's model list and file browsers. It is a copy: :func:`load_model` and :func:`read_card` always use the card
inside the ``.pt`` (the authoritative one), so a stale or missing sidecar is harmless. Pass ``sidecar=False`` to skip it.

Training-run state (optimisers, samplers, RNG) uses the same safe machinery through :func:`save_state` /
:func:`load_state`: atomic ``torch.save`` of a dict checked to contain only ``weights_only``-loadable values.

Reading a file from an untrusted source
---------------------------------------
Every reader (:func:`read_model_file`, :func:`read_card`, :func:`load_model`, :func:`load_state`,
:func:`load_state_dict_file`, and through them ``segment``, ``info``, ``import-checkpoint``, the catalogue, the
warm worker and the Slicer modules) goes through :func:`safe_torch_load`, and every problem is a
:class:`CheckpointError` naming the file:

* **pickled code** (any ``__reduce__`` of a non-tensor class, in the payload, nested in a container, in a tensor's
  rebuild arguments or storage record, in the zip format or the legacy pickle format) is refused by the
  ``weights_only`` unpickler before it runs; the message names the global the file asked for;
* **the card** (JSON text) is checked before anything is built: a card over :data:`MAX_CARD_BYTES`, or whose
  fields have the wrong JSON type (``class_names`` must be a list of strings, ``label_values`` a list of integers,
  ``spacing_xyz`` three numbers, ``patch_size_xyz`` three integers, ``in_channels`` an integer, ``network`` /
  ``normalization`` / ``training`` objects, ``method`` / ``arch`` strings; ``true``/``false`` is never a number),
  is **refused**; so are values outside :data:`CARD_LIMITS` (spacing 0.001-1000 mm, patch sides 1-2048 voxels and
  at most 512^3 voxels, up to 64 input channels, 2-1000 classes, label values 0-65535, ``n_filters`` 1-512), a
  card or payload ``format_version`` newer than :data:`FORMAT_VERSION` (upgrade message). ``normalization``
  options are checked where they are used (``segment`` refuses an unknown option, naming it). **Unknown top-level
  keys** of the card (a newer minor revision) are **ignored**: kept in ``card.extra``, shown by ``semisupseg
  info``, never interpreted. Unknown keys of ``network`` are refused
  (the network cannot be built from them). The sidecar ``.json`` is never read by the loaders;
* **weights** are compared with the network the card describes, built first on PyTorch's ``meta`` device (shapes
  only, no memory), so a card declaring a huge network (``n_filters`` 10^6) allocates nothing; missing, unexpected
  and wrongly shaped or typed tensors are refused with the first few keys and both shapes; NaN/Inf weights are
  refused naming the tensors. A tensor header claiming more data than the file holds is refused by PyTorch's
  record-size check (read in full) or only memory-mapped (``read_card``/``info``: never read). A zip whose
  entries expand to more than twice the file (compressed entries: ``torch.save`` never writes them) is refused
  before it is opened by torch, so a small file cannot unpack to gigabytes.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from semisupseg import __version__
from semisupseg.fileio import atomic_open, check_writable, write_text_atomic
from semisupseg.errors import CheckpointError
from semisupseg.runtime import resolve_device

PathLike = Union[str, os.PathLike]

#: version of the file layout written by this package; files with a larger number are refused
FORMAT_VERSION = 1
#: key of the format version in the payload dict (its presence marks a SemiSupSeg model file)
FORMAT_KEY = "semisupseg_format"
#: the ``format`` entry of a training run's resume state (``RUN/resume.pt``, written by the training engine)
RESUME_FORMAT = "semisupseg-resume"
#: suffix of the human-readable copy of the card written beside a model file
SIDECAR_SUFFIX = ".json"
#: largest card (metadata JSON text, in bytes) a model file may carry
MAX_CARD_BYTES = 4 << 20
#: sanity limits of a card (checked on save and on load, before any network is built; see the module docstring)
CARD_LIMITS: Dict[str, Any] = {
    "spacing_mm": (1e-3, 1e3),        # each of spacing_xyz
    "patch_side": 2048,               # each of patch_size_xyz, voxels
    "patch_voxels": 512 ** 3,         # product of patch_size_xyz (far beyond any trainable patch: a run's model is
                                      # never refused at save time)
    "in_channels": 64,
    "classes": 1000,                  # len(class_names), background included
    "label_value": 65535,
    "n_filters": 512,                 # network["n_filters"] of the V-Net family
}

__all__ = [
    "FORMAT_VERSION", "ModelCard", "CheckpointError", "make_card", "save_model", "load_model", "read_card",
    "read_model_file", "save_state", "load_state", "safe_torch_load", "load_state_dict_file", "sidecar_path",
    "check_weights_only", "import_peer_checkpoint", "export_peer_checkpoint", "check_card_dict", "CARD_LIMITS",
    "MAX_CARD_BYTES", "half_precision_state", "INFERENCE_DEFAULTS",
]


# ----------------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------------

#: the inference options a model card may recommend (``ModelCard.inference``) and their value when it does not:
#: ``keep_largest``; ``orientation``, the voxel order of the training scans (``semisupseg.orientation``; scans are
#: brought into it before inference), ``""`` for cards that do not know it (scans are used as stored)
INFERENCE_DEFAULTS: Dict[str, Any] = {"keep_largest": False, "orientation": ""}


@dataclass
class ModelCard:
    """Everything needed to use a trained network on a new image, stored as JSON inside the model file.

    * ``method``: the training method's registry name (``"sassnet"``, ``"uamt"``, …; for imported peer weights the
      peer layout, see ``training["source"]``);
    * ``arch`` / ``network``: the network registry name and its config dict (``semisupseg.nets.build_network(arch,
      network)`` rebuilds it);
    * ``class_names`` / ``label_values``: one entry per output class, background first; ``label_values[i]`` is the
      value written in the label map for class ``i``;
    * ``in_channels``: image channels the network expects;
    * ``spacing_xyz``: target voxel spacing in mm, **x, y, z** (images are resampled to it before inference);
    * ``patch_size_xyz``: training patch / inference window size in voxels, **x, y, z**;
    * ``normalization``: the intensity normalisation (``semisupseg.data.preprocess.NormalizationConfig`` as a dict,
      e.g. ``{"kind": "zscore"}``);
    * ``training``: free-form summary (data, labeled/unlabeled cases, iterations, validation Dice, seed, …);
    * ``inference``: how the model is meant to be used when the user does not say otherwise --
      ``{"keep_largest": true}`` makes :func:`semisupseg.inference.segment` keep each class's largest connected
      component by default; ``{"orientation": "RAS"}``: the voxel order of the training scans, which every scan
      is brought into before inference (keys: :data:`INFERENCE_DEFAULTS`);
    * ``package_version``, ``created`` (ISO 8601 UTC), ``format_version``;
    * ``extra``: fields of a newer minor revision this version does not know (kept, not interpreted).
    """

    method: str
    arch: str
    network: Dict[str, Any]
    class_names: List[str]
    label_values: List[int]
    in_channels: int
    spacing_xyz: Tuple[float, float, float]
    patch_size_xyz: Tuple[int, int, int]
    normalization: Dict[str, Any] = field(default_factory=lambda: {"kind": "zscore"})
    training: Dict[str, Any] = field(default_factory=dict)
    inference: Dict[str, Any] = field(default_factory=dict)
    package_version: str = __version__
    created: str = ""
    format_version: int = FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        self.class_names = [str(c) for c in self.class_names]
        self.label_values = [int(v) for v in self.label_values]
        self.spacing_xyz = tuple(float(s) for s in self.spacing_xyz)  # type: ignore[assignment]
        self.patch_size_xyz = tuple(int(s) for s in self.patch_size_xyz)  # type: ignore[assignment]
        self.in_channels = int(self.in_channels)
        self.network = dict(self.network)
        self.normalization = dict(self.normalization)
        self.training = dict(self.training)
        self.inference = dict(self.inference)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spacing_zyx(self) -> Tuple[float, float, float]:
        return tuple(reversed(self.spacing_xyz))  # type: ignore[return-value]

    @property
    def patch_size_zyx(self) -> Tuple[int, int, int]:
        return tuple(reversed(self.patch_size_xyz))  # type: ignore[return-value]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistency (called on save and on load)."""
        if not self.method or not isinstance(self.method, str):
            raise ValueError("method must be a non-empty string")
        if not self.arch or not isinstance(self.arch, str):
            raise ValueError("arch must be a non-empty string")
        if len(self.class_names) < 2:
            raise ValueError(f"class_names must list the background and at least one class, got {self.class_names}")
        if len(self.label_values) != len(self.class_names):
            raise ValueError(f"{len(self.class_names)} class_names but {len(self.label_values)} label_values")
        if len(set(self.label_values)) != len(self.label_values) or min(self.label_values) < 0:
            raise ValueError(f"label_values must be distinct non-negative integers, got {self.label_values}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be distinct, got {self.class_names}")
        if len(self.spacing_xyz) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing_xyz):
            raise ValueError(f"spacing_xyz must be 3 positive millimetre values, got {self.spacing_xyz}")
        lo, hi = CARD_LIMITS["spacing_mm"]
        if not all(lo <= s <= hi for s in self.spacing_xyz):
            raise ValueError(f"spacing_xyz {list(self.spacing_xyz)} is outside {lo:g}-{hi:g} mm")
        if len(self.patch_size_xyz) != 3 or not all(s > 0 for s in self.patch_size_xyz):
            raise ValueError(f"patch_size_xyz must be 3 positive voxel counts, got {self.patch_size_xyz}")
        from semisupseg.data.fingerprint import patch_size_problem

        problem = patch_size_problem(self.patch_size_xyz)
        if problem:
            raise ValueError(f"patch_size_xyz: {problem}")
        side, voxels = CARD_LIMITS["patch_side"], CARD_LIMITS["patch_voxels"]
        if max(self.patch_size_xyz) > side or math.prod(self.patch_size_xyz) > voxels:
            raise ValueError(f"patch_size_xyz {list(self.patch_size_xyz)} is too large (at most {side} voxels a side "
                             f"and {voxels} voxels in all)")
        if not 1 <= self.in_channels <= CARD_LIMITS["in_channels"]:
            raise ValueError(f"in_channels must be 1-{CARD_LIMITS['in_channels']}, got {self.in_channels}")
        if len(self.class_names) > CARD_LIMITS["classes"]:
            raise ValueError(f"{len(self.class_names)} classes is more than {CARD_LIMITS['classes']}")
        if max(self.label_values) > CARD_LIMITS["label_value"]:
            raise ValueError(f"label_values must be at most {CARD_LIMITS['label_value']}, got {max(self.label_values)}")
        if not _is_int(self.format_version) or self.format_version < 1:
            raise ValueError(f"format_version must be a positive integer, got {self.format_version!r}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"the card is format {self.format_version}, written by a newer SemiSupSeg; this is "
                             f"version {__version__} which reads format <= {FORMAT_VERSION}. Upgrade semisupseg")
        for key, value in self.inference.items():  # keys a newer version added are kept, not interpreted
            if key in INFERENCE_DEFAULTS and not isinstance(value, type(INFERENCE_DEFAULTS[key])):
                raise ValueError(f"inference {key} must be {type(INFERENCE_DEFAULTS[key]).__name__}, got {value!r}")
        if self.inference.get("orientation"):
            from semisupseg.orientation import orientation_problem

            problem = orientation_problem(self.inference["orientation"])
            if problem:
                raise ValueError(f"inference orientation: {problem}")
        members = self.network.get("members")  # an ensemble: each member's width is checked the same way
        configs = [m.get("config") if isinstance(m, dict) else None for m in members] \
            if isinstance(members, list) else [self.network]
        for config in configs:
            n_filters = config.get("n_filters") if isinstance(config, dict) else None
            if n_filters is not None and (not _is_int(n_filters) or not 1 <= n_filters <= CARD_LIMITS["n_filters"]):
                raise ValueError(f"network n_filters must be an integer 1-{CARD_LIMITS['n_filters']}, "
                                 f"got {n_filters!r}")
        net_classes = self.network.get("num_classes")
        if net_classes is not None and int(net_classes) != self.num_classes:
            raise ValueError(f"the network has {net_classes} classes but the card names {self.num_classes}")
        net_in = self.network.get("in_channels")
        if net_in is not None and int(net_in) != self.in_channels:
            raise ValueError(f"the network takes {net_in} input channels but the card says {self.in_channels}")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (``extra`` merged in; numpy scalars/arrays and paths converted; NaN/inf become None)."""
        d = _jsonable(dataclasses.asdict(self), "card")
        d["spacing_xyz"] = list(self.spacing_xyz)
        d["patch_size_xyz"] = list(self.patch_size_xyz)
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if k not in d})
        return d

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelCard":
        """Build a card from its dict; unknown keys go to ``extra``; missing required keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = dict(d.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in names and k != "extra"})
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # type: ignore
        missing = [k for k in required if k not in known]
        if missing:
            raise ValueError(f"the model card lacks {', '.join(missing)}")
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed model card: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        """The card of a model file's JSON text, checked strictly first (:func:`check_card_dict`: JSON types, size;
        a wrong type is refused, never coerced)."""
        if len(text) > MAX_CARD_BYTES:
            raise ValueError(f"the card is {len(text)} characters long, more than {MAX_CARD_BYTES}")
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("the metadata is not a JSON object")
        check_card_dict(d)
        return cls.from_dict(d)

    def summary_lines(self, head: Sequence[Tuple[str, str]] = ()) -> List[str]:
        """Lines for people (``semisupseg info`` and ``models info``, the Slicer model selector, ship_model): the model,
        then the training summary. An ensemble's members are one line each (:func:`network_text`,
        :func:`member_lines`); the settings derived from the data and the training data's statistics are summarised,
        not dumped as JSON. ``head``: ``(key, text)`` rows put first, in the same column (the model file, ...)."""
        rows: List[Tuple[str, str]] = list(head)
        rows += [("method", self.method), ("network", f"{self.arch} ({network_text(self.network)})"),
                 ("classes", ", ".join(f"{v}={n}" for n, v in zip(self.class_names, self.label_values))),
                 ("input channels", str(self.in_channels)), ("spacing (x,y,z)", _xyz(self.spacing_xyz, "mm")),
                 ("patch (x,y,z)", _xyz(self.patch_size_xyz, "voxels")),
                 ("intensity norm.", ", ".join(f"{k}={v}" for k, v in self.normalization.items()
                                               if v is not None and v is not False) or "none")]
        if self.inference:
            rows.append(("inference", ", ".join(f"{k}={v}" for k, v in self.inference.items())
                         + " (the default unless the user says otherwise)"))
        rows += [("package version", str(self.package_version)), ("created", str(self.created)),
                 ("format version", str(self.format_version))]
        rows += [(k, json.dumps(v)) for k, v in self.extra.items()]
        lines = aligned_lines(rows)
        if self.training:
            lines.append("training:")
            lines += aligned_lines(training_rows(self.training), "  ")
        return lines


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _xyz(values: Sequence[Any], unit: str = "") -> str:
    return " x ".join(f"{float(v):g}" for v in values) + (f" {unit}" if unit else "")


def aligned_lines(rows: Sequence[Tuple[str, str]], indent: str = "") -> List[str]:
    """``key: value`` lines with the values in one column."""
    width = max((len(k) for k, _ in rows), default=0) + 2
    return [f"{indent}{(k + ':').ljust(width)}{v}" for k, v in rows]


def training_rows(training: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """``(key, text)`` rows of a card's training summary: the scalars as they are, an ensemble's members one row
    each, the settings derived from the data (``plan.from_data``) and the training scans' statistics in short."""
    training = dict(training)
    plan = training.pop("plan", None) or {}
    stats = training.pop("data_statistics", None) or {}
    members = training.pop("members", None)
    rows = [(k, _value_text(v)) for k, v in training.items()]
    rows += member_lines(members)
    for key, value in ((plan.get("from_data") or {}) if isinstance(plan, dict) else {}).items():
        rows.append((key, f"{_value_text(value)} (from the data)"))
    if isinstance(stats, dict) and stats:
        rows.append(("training scans", f"{stats.get('cases')} {stats.get('modality', '')}, median "
                                       f"{_xyz(stats.get('median_extent_mm') or [], 'mm')} at "
                                       f"{_xyz(stats.get('median_spacing_xyz') or [], 'mm')}"))
    return rows


def network_text(network: Mapping[str, Any]) -> str:
    """``k=v, ...`` of a network config; an ensemble's members are counted by their configs
    (``mean probabilities of 5 members: 5 x vnet n_filters=8, ...``)."""
    members = network.get("members")
    if not isinstance(members, list):
        return ", ".join(f"{k}={v}" for k, v in network.items())
    counts: Dict[str, int] = {}  # member description -> how many, in the members' order
    for m in members:
        text = f"{m.get('arch')} " + ", ".join(f"{k}={v}" for k, v in (m.get("config") or {}).items())
        counts[text] = counts.get(text, 0) + 1
    parts = [f"{n} x {t}" if n > 1 else t for t, n in counts.items()]
    return f"mean probabilities of {len(members)} members: " + "; ".join(parts)


def member_lines(members: Any) -> List[Tuple[str, str]]:
    """``[("member 1", "sgrs, seed 1, 3000 iterations, 20 labeled + 120 unlabeled"), ...]`` from an ensemble card's
    ``training["members"]`` (the source file is named when the members' file names differ); ``[]`` otherwise."""
    if not isinstance(members, list):
        return []
    named = len({m.get("file") if isinstance(m, dict) else None for m in members}) > 1  # all "last.pt": unnamed
    out = []
    for i, m in enumerate(members, 1):
        if not isinstance(m, dict):
            out.append((f"member {i}", json.dumps(m)))
            continue
        parts = [str(m.get("method", "?"))]
        if "seed" in m:
            parts.append(f"seed {m['seed']}")
        if "iterations" in m:
            parts.append(f"{m['iterations']} iterations")
        if "labeled_cases" in m:
            parts.append(f"{m['labeled_cases']} labeled + {m.get('unlabeled_cases', 0)} unlabeled")
        if named and "file" in m:
            parts.append(f"from {m['file']}")
        out.append((f"member {i}", ", ".join(parts)))
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_card_dict(d: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field of a card dict (as read from JSON) whose **type** is wrong.

    The dataclass would coerce (``"abc"`` → three class names, ``1.7`` → label 1, ``true`` → 1 channel); a card read
    from a file is checked here first so such a card is refused instead. Ranges are :meth:`ModelCard.validate`'s.
    Unknown keys are not checked (they go to ``extra``).
    """
    def need(key: str, ok: bool, what: str) -> None:
        if key in d and not ok:
            raise ValueError(f"{key} must be {what}, got {type(d[key]).__name__} {_short(d[key])}")

    for key in ("method", "arch", "package_version", "created"):
        need(key, isinstance(d.get(key), str), "a string")
    for key in ("network", "normalization", "training", "inference", "extra"):
        need(key, isinstance(d.get(key), dict), "an object")
    need("class_names", isinstance(d.get("class_names"), list) and all(isinstance(c, str) for c in d["class_names"]),
         "a list of strings")
    need("label_values", isinstance(d.get("label_values"), list) and all(_is_int(v) for v in d["label_values"]),
         "a list of integers")
    need("in_channels", _is_int(d.get("in_channels")), "an integer")
    need("format_version", _is_int(d.get("format_version")), "an integer")
    need("spacing_xyz", isinstance(d.get("spacing_xyz"), list) and len(d["spacing_xyz"]) == 3
         and all(_is_number(v) for v in d["spacing_xyz"]), "3 numbers (mm, x y z)")
    need("patch_size_xyz", isinstance(d.get("patch_size_xyz"), list) and len(d["patch_size_xyz"]) == 3
         and all(_is_int(v) for v in d["patch_size_xyz"]), "3 integers (voxels, x y z)")
    network = d.get("network")
    if isinstance(network, dict):
        _check_network_dict(network, "network", members_allowed=True)


def _check_network_dict(network: Mapping[str, Any], where: str, members_allowed: bool) -> None:
    """A network config of a card: scalars or short lists of numbers (a V-Net's ``encoder_depths``) only, except an
    ensemble's ``members`` (a list of ``{"arch": name, "config": {...}}``, one level deep, at most the ensemble
    network's ``MAX_MEMBERS``)."""
    from semisupseg.nets.ensemble import MAX_MEMBERS

    for k, v in network.items():
        if k == "members" and members_allowed and isinstance(v, list):
            if len(v) > MAX_MEMBERS:
                raise ValueError(f"{where} members lists {len(v)} networks, more than {MAX_MEMBERS}")
            for i, m in enumerate(v):
                if (not isinstance(m, dict) or set(m) != {"arch", "config"} or not isinstance(m["arch"], str)
                        or not isinstance(m["config"], dict)):
                    raise ValueError(f"{where} members[{i}] must be {{'arch': name, 'config': {{...}}}}, got "
                                     f"{_short(m)}")
                _check_network_dict(m["config"], f"{where} members[{i}] config", members_allowed=False)
        elif isinstance(v, list):  # a short list of numbers (a V-Net's encoder_depths)
            if len(v) > 16 or not all(_is_number(x) for x in v):
                raise ValueError(f"{where} {k} must be a number, string, boolean or up to 16 numbers, got "
                                 f"{_short(v)}")
        elif not (v is None or isinstance(v, (str, bool, int, float))):
            raise ValueError(f"{where} {k} must be a number, string, boolean or up to 16 numbers, got "
                             f"{type(v).__name__} {_short(v)}")


def _short(v: Any, n: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= n else text[:n] + "…"


def _jsonable(obj: Any, where: str) -> Any:
    """``obj`` with JSON-compatible types only: numpy scalars/arrays → Python numbers/lists, tuples → lists,
    paths → str, non-finite floats → None. Anything else raises ``ValueError`` naming the entry."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar/array, 0-d or small tensors
        return _jsonable(obj.tolist(), where)
    raise ValueError(f"{where}: {type(obj).__name__} value {obj!r} cannot be stored in the JSON model card")


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside DDP/DataParallel (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def make_card(model: nn.Module, *, method: str, spacing_xyz: Sequence[float], patch_size_xyz: Sequence[int],
              class_names: Optional[Sequence[str]] = None, label_values: Optional[Sequence[int]] = None,
              normalization: Optional[Mapping[str, Any]] = None, training: Optional[Mapping[str, Any]] = None,
              inference: Optional[Mapping[str, Any]] = None, **extra: Any) -> ModelCard:
    """A :class:`ModelCard` for ``model`` with ``arch``, ``network`` and ``in_channels`` taken from the model.

    ``class_names`` default to ``background, class1, …``; ``label_values`` to ``0 … C-1``; ``normalization`` to
    ``{"kind": "zscore"}``. Extra keyword arguments are stored in ``extra``.
    """
    from semisupseg.nets import network_arch

    net = _unwrap(model)
    config = net.config.to_dict()  # type: ignore[union-attr]
    num_classes = int(config["num_classes"])
    if class_names is None:
        class_names = ["background"] + [f"class{i}" for i in range(1, num_classes)]
    if label_values is None:
        label_values = list(range(len(class_names)))
    card = ModelCard(method=method, arch=network_arch(net), network=config, class_names=list(class_names),
                     label_values=list(label_values), in_channels=int(config["in_channels"]),
                     spacing_xyz=tuple(spacing_xyz), patch_size_xyz=tuple(patch_size_xyz),  # type: ignore[arg-type]
                     normalization=dict(normalization) if normalization is not None else {"kind": "zscore"},
                     training=dict(training or {}), inference=dict(inference or {}), extra=dict(extra))
    card.validate()
    return card


# ----------------------------------------------------------------------------------------------------------------------
# Safe low-level file access
# ----------------------------------------------------------------------------------------------------------------------

#: Python types a ``weights_only`` load accepts (besides tensors), checked before saving
_PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.Size, torch.dtype, torch.device)


def check_weights_only(obj: Any, where: str = "payload") -> None:
    """Raise ``TypeError`` naming the first value ``torch.load(weights_only=True)`` could not read back.

    Allowed: tensors, ``str``/``bytes``/numbers/``bool``/``None``, ``torch.Size``/``dtype``/``device`` and
    plain ``dict``/``OrderedDict``/``list``/``tuple``/``set`` of those (dict keys: str/int/float/bool/None). numpy arrays and
    generators are not: convert them (``torch.from_numpy``, ``.tolist()``) first.
    """
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and not isinstance(obj, nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(obj).__name__} is not loadable with weights_only")
        return
    if type(obj) in _PLAIN:  # exact types: numpy scalars subclass float/int but need numpy globals to load
        return
    if isinstance(obj, dict):
        if type(obj) not in (dict, collections.OrderedDict, collections.Counter):
            raise TypeError(f"{where}: {type(obj).__name__} is not loadable with weights_only; use a plain dict")
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None)):
                raise TypeError(f"{where}: dict key {k!r} of type {type(k).__name__} is not allowed")
            check_weights_only(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple, set)):
        if type(obj) not in (list, tuple, set):
            raise TypeError(f"{where}: {type(obj).__name__} is not loadable with weights_only; "
                            "use a plain list, tuple or dict")
        for i, v in enumerate(obj):
            check_weights_only(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__name__} is not loadable with weights_only "
                    "(store tensors, numbers, strings and containers only)")


def _atomic_torch_save(payload: Any, path: Path, overwrite: bool) -> None:
    if Path(path).is_dir():
        raise CheckpointError("is a directory", path)
    buffer = io.BytesIO()  # serialised first: torch's zip writer reports a failed write (a full disk) as a
    torch.save(payload, buffer)  # meaningless RuntimeError; a plain write raises OSError "No space left on device"
    try:
        with atomic_open(path, "wb", overwrite, fsync=True) as fh:
            fh.write(buffer.getbuffer())
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # name the file the user knows, not a temporary one
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _sniff(path: Path) -> str:
    """``"zip"`` (torch >= 1.6 format), ``"pickle"`` (legacy torch / raw pickle) or ``"unknown"`` from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _check_zip_archive(path: Path, verify_crc: bool = True) -> None:
    """Refuse a zip whose entries expand to far more than the file holds (compressed entries: a zip bomb), and,
    with ``verify_crc``, one whose records fail their CRC-32 (a damaged file: ``torch.load`` does not check them, so
    bytes flipped inside the tensor data would load as other weights).

    ``torch.save`` stores its records uncompressed, so a real checkpoint's entries add up to about its own size;
    a deflated ``data.pkl`` of a few MB could otherwise unpack to gigabytes inside ``torch.load``. The CRC check
    reads the file once more (a 10 MB model: milliseconds). An archive Python cannot read is left to
    ``torch.load``'s own error."""
    import zipfile
    import zlib

    unreadable = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,  # "zip file version 17.8"
                  zlib.error)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except unreadable:
        return
    size = path.stat().st_size
    if declared > 2 * size + (1 << 20):
        raise CheckpointError(f"is a zip archive whose entries expand to {declared / 1e6:.1f} MB from "
                              f"{size / 1e6:.1f} MB (compressed entries, which torch.save never writes: a zip "
                              "bomb?); refused before reading it", path)
    if not verify_crc:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except unreadable:
        return
    if bad is not None:
        raise CheckpointError(f"is a damaged model file: its record {bad!r} fails its checksum (CRC-32); re-download or re-copy "
                              "the file", path)


def safe_torch_load(path: PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with every failure turned into a
    :class:`CheckpointError` naming the file. Nothing in the file is ever executed.

    ``mmap=True`` maps tensor storages instead of reading them (cheap when only the metadata is needed).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such file", path)
    if path.is_dir():
        raise CheckpointError("is a directory, not a model file", path)
    if path.stat().st_size == 0:
        raise CheckpointError("is empty, not a model file", path)
    kind = _sniff(path)
    if kind == "unknown" and path.suffix == SIDECAR_SUFFIX:
        raise CheckpointError("is the JSON copy of a model card; pass the model file (.pt) beside it", path)
    if kind == "unknown":
        raise CheckpointError("is not a PyTorch checkpoint (neither a torch zip archive nor a pickle; a text, image "
                              "or corrupt file?)", path)
    if kind == "zip":
        _check_zip_archive(path)
    kwargs: Dict[str, Any] = {"map_location": "cpu", "weights_only": True}
    if mmap and kind == "zip":
        kwargs["mmap"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pickle-protocol notice of the weights_only unpickler
            return torch.load(str(path), **kwargs)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError, … for bad files
        text = str(exc)
        if "GLOBAL" in text or "unsupported global" in text.lower():
            found = re.search(r"GLOBAL\s+([\w.]+)", text)
            detail = f"it references {found.group(1)}" if found else "unsupported global"
            raise CheckpointError(
                "refused: the file contains pickled Python objects that can only be loaded by running code from "
                f"the file ({detail}); nothing was executed. Model files must hold plain "
                "tensors: if you trust its source, re-save its state_dict in a trusted Python session "
                "(torch.save(model.state_dict(), ...)) and import that", path) from None
        if "Unsupported operand" in text:  # the weights_only unpickler stops at opcodes torch.save never writes
            raise CheckpointError(
                f"is not a readable PyTorch checkpoint (a pickle using opcodes the safe loader does not read: "
                f"{_first_line(text)}); nothing was executed", path) from None
        if kind == "zip":
            raise CheckpointError(f"is a zip archive but not a readable PyTorch checkpoint ({_first_line(text)})",
                                  path) from None
        raise CheckpointError(f"is not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(text)})",
                              path) from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    noise = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")
    useful = [ln for ln in lines if not ln.startswith(noise)]
    line = (useful or lines or ["unknown error"])[0]
    return line[:200]


def save_state(path: PathLike, payload: Dict[str, Any], overwrite: bool = True) -> Path:
    """Atomically write a dict of tensors/plain values (e.g. a training run's resume state: model, optimisers,
    sampler and RNG states) so that :func:`load_state` reads it with ``weights_only=True``.

    The payload is checked first (:func:`check_weights_only`; a ``TypeError`` names the offending entry); the file
    appears only complete (temp file + ``os.replace``). Returns the path.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    check_weights_only(payload)
    path = Path(path)
    _atomic_torch_save(payload, path, overwrite)
    return path


def load_state(path: PathLike) -> Dict[str, Any]:
    """Read a dict written by :func:`save_state` (``weights_only=True``, tensors on CPU); errors are
    :class:`CheckpointError` naming the file."""
    payload = safe_torch_load(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"holds a {type(payload).__name__}, expected a dict of saved state", path)
    return payload


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a raw ``state_dict`` (``{name: tensor}``) as the peer releases save it with ``torch.save(
    model.state_dict())``. Common wrappers (``{"state_dict": …}``, ``{"model": …}``, ``{"net": …}``) are unwrapped.
    Refuses SemiSupSeg model files (they need no import)."""
    payload = safe_torch_load(path)
    if isinstance(payload, dict) and FORMAT_KEY in payload:
        raise CheckpointError("is already a SemiSupSeg model file; no import needed", path)
    if isinstance(payload, dict) and not _is_tensor_dict(payload):
        for key in ("state_dict", "model_state_dict", "model", "net", "network"):
            if isinstance(payload.get(key), dict) and _is_tensor_dict(payload[key]):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not _is_tensor_dict(payload):
        raise CheckpointError("does not hold a state_dict (a dict of parameter name → tensor)", path)
    return dict(payload)


def _is_tensor_dict(d: Mapping[Any, Any]) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


# ----------------------------------------------------------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------------------------------------------------------

def sidecar_path(path: PathLike) -> Path:
    """``model.pt`` → ``model.json`` (the human-readable copy of the card)."""
    return Path(path).with_suffix(SIDECAR_SUFFIX)


def half_precision_state(state: Mapping[str, torch.Tensor], path: Optional[PathLike] = None
                         ) -> Dict[str, torch.Tensor]:
    """``state`` with every floating tensor stored as float16 (integer buffers unchanged): half the file size.
    :func:`load_model` casts the weights back to the network's float32. A weight beyond float16's range (±65504,
    which would turn into Inf) is a :class:`CheckpointError` naming ``path``."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if v.is_floating_point():
            h = v.to(torch.float16)
            if not bool(torch.isfinite(h).all()) and bool(torch.isfinite(v).all()):
                raise CheckpointError(f"cannot store in half precision: {k} has values beyond float16's range "
                                      f"(max |w| {float(v.abs().max()):.3g})", path)
            out[k] = h
        else:
            out[k] = v
    return out


def save_model(path: PathLike, model: nn.Module, card: ModelCard, overwrite: bool = False,
               sidecar: bool = True, half: bool = False) -> Path:
    """Write ``model``'s weights and ``card`` to ``path`` (a ``.pt`` file, atomically) and, with ``sidecar``, the
    card's JSON to ``path.with_suffix(".json")``. ``half``: store the floating weights as float16
    (:func:`half_precision_state`; for shipped models -- check that the labels do not change).

    ``arch``, ``network`` and ``in_channels`` of the card must describe ``model`` (use :func:`make_card`). Refuses to
    replace existing files unless ``overwrite`` (:class:`~semisupseg.errors.OutputExistsError`). Returns the path.
    """
    from semisupseg.nets import network_arch

    path = Path(path)
    if path.suffix == SIDECAR_SUFFIX:
        raise CheckpointError("a model file must not end in .json (that name is used for the card beside it)", path)
    net = _unwrap(model)
    try:
        card.validate()
        card_json = card.to_json()
        check_card_dict(json.loads(card_json))  # what load_model checks first: never write a file it refuses
    except ValueError as exc:
        raise CheckpointError(f"invalid model card: {exc}", path) from None
    try:
        arch = network_arch(net)
    except KeyError as exc:
        raise CheckpointError(f"cannot save: {exc.args[0]}", path) from None
    if arch != card.arch:
        raise CheckpointError(f"the card says arch {card.arch!r} but the model is {arch!r}", path)
    config = getattr(net, "config", None)
    if config is not None and hasattr(config, "to_dict") and config.to_dict() != card.network:
        raise CheckpointError(f"the card's network config {card.network} differs from the model's "
                              f"{config.to_dict()}", path)
    side = sidecar_path(path)
    for p in ([path, side] if sidecar else [path]):  # both checked before either is written
        check_writable(p, overwrite)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    if half:
        state = half_precision_state(state, path)
    payload = {FORMAT_KEY: int(card.format_version), "metadata": card_json, "state_dict": state}
    _atomic_torch_save(payload, path, overwrite=overwrite)
    if sidecar:
        write_text_atomic(card.to_json(indent=2) + "\n", side, overwrite=overwrite)
    return path


def read_model_file(path: PathLike, mmap: bool = False) -> Tuple[ModelCard, Dict[str, torch.Tensor]]:
    """The card and the raw state_dict of a model file (no network is built). Every problem is a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    payload = safe_torch_load(path, mmap=mmap)
    if not isinstance(payload, dict) or FORMAT_KEY not in payload:
        if isinstance(payload, dict) and payload.get("format") == RESUME_FORMAT:
            raise CheckpointError("is a training run's resume state, not a model: use the run's best.pt or last.pt "
                                  "(or the run folder's name after 'semisupseg models register-run')", path)
        if isinstance(payload, dict) and (_is_tensor_dict(payload) or any(
                isinstance(payload.get(k), dict) and _is_tensor_dict(payload[k]) for k in ("state_dict", "model", "net"))):
            raise CheckpointError(
                "is a raw PyTorch state_dict, not a SemiSupSeg model file (it has no model card: spacing, classes, "
                "normalisation). Convert it once with: semisupseg import-checkpoint FILE -o MODEL.pt "
                "--layout sassnet|uamt|mcnet --spacing MM", path)
        raise CheckpointError(f"is a PyTorch file but not a SemiSupSeg model file (no {FORMAT_KEY!r} entry)", path)
    version = payload[FORMAT_KEY]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"has an invalid format version {version!r}", path)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"was written in model-file format {version} by a newer SemiSupSeg; this is version {__version__} which "
            f"reads format <= {FORMAT_VERSION}. Upgrade semisupseg to load it", path)
    meta = payload.get("metadata")
    if not isinstance(meta, str):
        raise CheckpointError("has no model card (metadata text)", path)
    try:
        card = ModelCard.from_json(meta)
        card.validate()
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"has an unreadable model card (not JSON: {exc})", path) from None
    except ValueError as exc:  # wrong types or values, a 5000-digit number
        raise CheckpointError(f"has an invalid model card: {exc}", path) from None
    except RecursionError:  # json.loads of a card nested thousands deep
        raise CheckpointError("has an unreadable model card: nested too deeply", path) from None
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise CheckpointError("has no weights (state_dict of tensors)", path)
    return card, state


def read_card(path: PathLike) -> ModelCard:
    """The :class:`ModelCard` of a model file, read from the ``.pt`` itself (tensor data is memory-mapped, not read)."""
    card, _ = read_model_file(path, mmap=True)
    return card


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    types = [f"{k} {state[k].dtype} vs {v.dtype}" for k, v in expected.items()
             if k in state and (state[k].is_floating_point() != v.is_floating_point() or state[k].is_complex())]
    if not (missing or unexpected or shapes or types):
        return

    def few(items: List[str]) -> str:
        return ", ".join(items[:4]) + (f" … (+{len(items) - 4} more)" if len(items) > 4 else "")

    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (file vs network): {few(shapes)}")
    if missing:
        parts.append(f"{len(missing)} missing key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if types:
        parts.append(f"{len(types)} dtype mismatch(es) (file vs network): {few(types)}")
    raise CheckpointError("weights do not fit the network its card describes — " + "; ".join(parts), path)


def _build(card: ModelCard, path: Path, device: Optional[str] = None) -> nn.Module:
    """The network ``card`` describes (on ``device``: ``"meta"`` for shapes only); errors name ``path``."""
    from semisupseg.nets import build_network

    try:
        if device is None:
            return build_network(card.arch, card.network)
        with torch.device(device):
            return build_network(card.arch, card.network)
    except KeyError as exc:
        raise CheckpointError(f"cannot rebuild the network: {exc.args[0]}", path) from None
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise CheckpointError(f"cannot rebuild network {card.arch!r} from {card.network}: {_first_line(str(exc))}",
                              path) from None


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, ModelCard]:
    """Rebuild the network of a model file with :func:`semisupseg.nets.build_network`, load its weights and return
    ``(model in eval mode on device, card)``. ``device``: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``
    (:func:`semisupseg.runtime.resolve_device`; an unavailable device is an ``InputError``).

    Raises :class:`CheckpointError` naming the file for: a missing/unreadable file, anything that is not a SemiSupSeg
    model file (a raw peer state_dict gets a hint to ``semisupseg import-checkpoint``), a pickle needing code
    execution (refused, nothing executed), a newer format version, an unknown architecture, and weights that do not
    fit the network (missing/unexpected keys, wrong shapes or dtypes — a few are listed) or are not finite.
    """
    path = Path(path)
    card, state = read_model_file(path)
    # the card's network is built on the meta device first (shapes, no memory): a card declaring a huge network
    # allocates nothing, and the real one is built only once the file's tensors (which it must match) are read
    shape_only = _build(card, path, device="meta")
    _check_keys(shape_only, state, path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"has non-finite weights (NaN or Inf) in {len(bad)} tensor(s): {', '.join(bad[:4])}"
                              + (" …" if len(bad) > 4 else ""), path)
    model = _build(card, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model.to(resolve_device(device)), card


# ----------------------------------------------------------------------------------------------------------------------
# Importing peer release weights
# ----------------------------------------------------------------------------------------------------------------------

#: patch sizes (x, y, z voxels) the LA releases trained with — the default of ``import-checkpoint``
DEFAULT_PEER_PATCH_XYZ = (112, 112, 80)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_peer_checkpoint(src: PathLike, layout: str, spacing_xyz: Sequence[float], *,
                           class_names: Optional[Sequence[str]] = None,
                           label_values: Optional[Sequence[int]] = None,
                           n_filters: Optional[int] = None,
                           patch_size_xyz: Sequence[int] = DEFAULT_PEER_PATCH_XYZ,
                           normalization: Optional[Mapping[str, Any]] = None,
                           method: Optional[str] = None,
                           decoder: Optional[str] = None) -> Tuple[nn.Module, ModelCard]:
    """Turn a raw peer ``state_dict`` file (UA-MT, SASSNet/DTC, MC-Net/SGRS-Net releases) into ``(model, card)``.

    The architecture (input channels, ``n_filters``, normalisation, classes, head form, SDM head) is read off the
    weights (:func:`semisupseg.nets.vnet.infer_vnet_config`); ``n_filters``, when given, must agree. What the weights
    cannot tell must be stated: ``spacing_xyz`` (mm, x,y,z; the LA releases use 0.625 isotropic), ``patch_size_xyz``
    (default 112 112 80), the intensity ``normalization`` (default ``{"kind": "zscore"}``: the releases' data are
    z-score normalised per volume) and the class names. The weights are checked by running the network on nothing:
    they must load strictly. Every problem is a :class:`CheckpointError` naming ``src``.
    """
    from semisupseg.nets import network_arch
    from semisupseg.nets.vnet import LayoutError, VNet, infer_vnet_config, map_state_dict

    src = Path(src)
    raw = load_state_dict_file(src)
    try:
        mapped, dropped = map_state_dict(raw, layout, decoder=decoder)
        config = infer_vnet_config(mapped)
    except LayoutError as exc:
        raise CheckpointError(f"does not fit layout {layout!r}: {exc}", src) from None
    if n_filters is not None and int(n_filters) != config.n_filters:
        raise CheckpointError(f"--n-filters {n_filters} was given but the weights have n_filters "
                              f"{config.n_filters}", src)
    if class_names is None:
        class_names = (["background", "foreground"] if config.num_classes == 2
                       else ["background"] + [f"class{i}" for i in range(1, config.num_classes)])
    if len(class_names) != config.num_classes:
        raise CheckpointError(f"{len(class_names)} class names given ({', '.join(class_names)}) but the weights "
                              f"have {config.num_classes} classes (background included)", src)
    model = VNet(config)
    _check_keys(model, mapped, src)
    model.load_state_dict(mapped, strict=True)
    model.eval()
    training: Dict[str, Any] = {"source": "imported", "file": src.name, "sha256": _sha256(src), "layout": layout}
    if dropped:
        training["dropped_prefixes"] = sorted({k.split(".", 1)[0] for k in dropped})
    try:
        card = ModelCard(method=method or layout, arch=network_arch(model), network=config.to_dict(),
                         class_names=list(class_names),
                         label_values=list(label_values) if label_values is not None else list(range(config.num_classes)),
                         in_channels=config.in_channels, spacing_xyz=tuple(spacing_xyz),  # type: ignore[arg-type]
                         patch_size_xyz=tuple(patch_size_xyz),  # type: ignore[arg-type]
                         normalization=dict(normalization) if normalization is not None else {"kind": "zscore"},
                         training=training)
        card.validate()
    except ValueError as exc:
        raise CheckpointError(f"cannot describe the imported model: {exc}", src) from None
    return model, card


#: training-summary keys describing the data: an ensemble's card takes them from its first member
#: (:func:`semisupseg.ensembles.combine_models`) and an exported member keeps them from the ensemble's card
DATA_KEYS = ("plan", "data_statistics", "data")


def _ensemble_member(card: ModelCard, state: Dict[str, torch.Tensor], member: Optional[int],
                     path: Path) -> Tuple[ModelCard, Dict[str, torch.Tensor]]:
    """``(card, state_dict)`` of member ``member`` (1-based) of an ensemble file: its weights without the
    ``members.<k>.`` prefix and a card with its network and its own training summary."""
    members = card.network.get("members") or []
    n = len(members)
    if member is None:
        raise CheckpointError(f"is an ensemble of {n} networks; pick the one to export with --member 1..{n}", path)
    if isinstance(member, bool) or not isinstance(member, int) or not 1 <= member <= n:
        raise CheckpointError(f"is an ensemble of {n} networks; member {member!r} is not in 1..{n}", path)
    spec = members[member - 1]
    prefix = f"members.{member - 1}."
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise CheckpointError(f"has no weights for member {member} (no '{prefix}' keys)", path)
    summaries = card.training.get("members")
    summary = summaries[member - 1] if isinstance(summaries, list) and len(summaries) == n else {}
    training = {k: v for k, v in summary.items() if k not in ("arch", "network", "method")}
    training.update({k: card.training[k] for k in DATA_KEYS if k in card.training})
    training["member_of"] = {"file": path.name, "member": member, "of": n}
    out = ModelCard.from_dict({**card.to_dict(), "method": summary.get("method", card.method), "arch": spec["arch"],
                               "network": dict(spec["config"]), "training": training})
    return out, sub


def export_peer_checkpoint(model_path: PathLike, dst: PathLike, layout: str, *, decoder: str = "decoder1",
                           overwrite: bool = False, member: Optional[int] = None) -> Tuple[Path, Path]:
    """Write the weights of a SemiSupSeg V-Net model file as a raw ``state_dict`` in a peer release's key layout
    (the inverse of :func:`import_peer_checkpoint`), so the releases' own test scripts can load it with
    ``net.load_state_dict(torch.load(dst))``. The card goes beside it as ``dst`` with ``.json`` (the raw format has
    no room for spacing, classes or normalisation, which the releases hard-code: LA at 0.625 mm, z-score per volume).

    ``layout``: ``"sassnet"`` (SASSNet/DTC: needs an SDM head), ``"uamt"`` (plain V-Net, no SDM head) or
    ``"mcnet"`` (MC-Net/SGRS-Net ``encoder.`` / ``<decoder>.`` split; the releases' other decoders are not in the
    file, so load it there with ``strict=False`` or combine it with their own). Only the ``vnet`` architecture has a
    peer layout. An ensemble file (``semisupseg ensemble``) has one per member: ``member`` (1-based) picks it, and
    the card beside it describes that member (its network and training summary; the ensemble's test figures are not
    the member's, so they are left out). Refuses to replace existing files unless ``overwrite``; returns ``(dst, card
    path)``. Every problem is a :class:`CheckpointError` naming the file.
    """
    from semisupseg.nets.vnet import LayoutError, to_layout

    model_path, dst = Path(model_path), Path(dst)
    card, state = read_model_file(model_path)
    if card.arch == "ensemble":
        card, state = _ensemble_member(card, state, member, model_path)
    elif member is not None:
        raise CheckpointError(f"holds one network, not an ensemble: there is no member {member} to pick", model_path)
    if card.arch != "vnet":
        raise CheckpointError(f"holds network {card.arch!r}; only 'vnet' models have a peer release layout",
                              model_path)
    try:
        peer = to_layout(state, layout, decoder=decoder)
    except LayoutError as exc:
        raise CheckpointError(f"cannot be written in layout {layout!r}: {exc}", model_path) from None
    if dst.suffix == SIDECAR_SUFFIX:
        raise CheckpointError("a weights file must not end in .json (that name is used for the card beside it)", dst)
    if dst.resolve() == model_path.resolve():
        raise CheckpointError("is the model file being exported; choose another output name", dst)
    side = sidecar_path(dst)
    for p in (dst, side):  # both checked before either is written
        check_writable(p, overwrite)
    _atomic_torch_save(peer, dst, overwrite=overwrite)  # the file's own CPU tensors, renamed
    exported = card.to_dict()
    exported["exported"] = {"layout": layout, "from": model_path.name, "sha256": _sha256(model_path)}
    if member is not None:
        exported["exported"]["member"] = member
    if layout == "mcnet":
        exported["exported"]["decoder"] = decoder
    write_text_atomic(json.dumps(exported, indent=2) + "\n", side, overwrite=overwrite)
    return dst, side
