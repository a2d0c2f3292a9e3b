"""The training panel's *Advanced* settings as a list of typed fields, generated from dataclasses.

A method's hyper-parameters are its ``Params`` dataclass (``semisupseg.methods``, e.g. ``SGRSParams``); the engine
applies ``method_params`` from the config as ``Method.make_params(cfg.method_params)`` (``semisupseg.training.engine``),
and the CLI sets them with ``--set method_params.NAME=VALUE``. :func:`method_fields` turns that dataclass into
:class:`FormField` s — name, kind, default, the documentation of the field, and the allowed words of a choice — so
the panel builds its Advanced section at run time and a new registered method gets its fields for free.
:func:`engine_fields` does the same for a few generic engine settings of :class:`semisupseg.training.TrainConfig`
(validation and save intervals, EMA decay, autocast, augmentation, optimiser details, network width).

Edited values go back to the child process as ``--set KEY=VALUE`` strings (:func:`set_arguments`), written so that
``semisupseg.training.config.parse_override`` reads back exactly the value (floats always with a decimal point:
YAML reads ``1e-05`` as a string), and only for values that differ from the defaults. :func:`validate_method_params`
builds the method's ``Params`` with the edited values, so the method's own checks (``__post_init__``) speak before
anything starts.

Where a field's documentation comes from, first found wins: ``#:`` comment lines right above the field, a string
right below it, or the clauses of the dataclass's docstring that name it in double backquotes (rst markup removed).
Choices: a ``typing.Literal`` annotation, else (method parameters) what the method's own check says when given a
word it does not know (``"... must be one of ('a', 'b') ..."`` or ``"... must be 'a' or 'b' ..."``), else the
double-quoted words the field's documentation lists when its default is one of them (``"volume" (release) or
"region"``); a ``str`` field with none of these is free text.

Qt-free (imports ``semisupseg`` only); the widget maps kinds to editors (``bool`` → check box, ``choice`` → combo
box, everything else → a line edit holding :meth:`FormField.format` text).
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: field kinds: scalar editors and comma-separated lists
KINDS = ("bool", "int", "float", "str", "choice", "ints", "floats", "strs")
#: the generic engine settings shown in the Advanced section (``TrainConfig`` keys; the main settings are elsewhere)
ENGINE_KEYS = ("val_every", "save_every", "ema_decay", "amp", "num_threads", "data.augment", "data.perturb",
               "data.foreground_prob", "model.n_filters", "optim.name", "optim.schedule", "optim.momentum",
               "optim.weight_decay", "optim.step_size", "optim.gamma", "optim.grad_clip", "overlays.keep")
_PROBE = "\x00not-a-choice"
#: what the config's docstrings do not say about some of :data:`ENGINE_KEYS`
_ENGINE_NOTES = {
    "num_threads": "CPU threads of the training process (empty: torch's default, all cores).",
    "data.foreground_prob": "share of labeled patches centred on a foreground voxel (0: patches drawn uniformly).",
    "model.n_filters": "width of the V-Net: channels of its first level, doubled at each level (papers: 16).",
    "optim.name": "the student's optimiser: sgd (papers), adam or adamw.",
    "optim.momentum": "SGD momentum.",
    "optim.weight_decay": "L2 weight decay of the optimiser.",
    "optim.step_size": "step schedule: the learning rate is multiplied by gamma every step_size iterations.",
    "optim.gamma": "step schedule: the factor applied every step_size iterations.",
}


@dataclass(frozen=True)
class FormField:
    """One editable setting.

    ``key``: the ``--set`` key (``method_params.alpha``, ``optim.momentum``); ``name``: the field's name; ``kind``:
    one of :data:`KINDS`; ``default``: the dataclass default (tuples for list kinds); ``doc``: one paragraph of plain
    text (may be empty); ``optional``: ``None`` is allowed (an empty editor); ``choices``: the allowed words of a
    ``choice`` field.
    """

    key: str
    name: str
    kind: str
    default: Any
    doc: str = ""
    optional: bool = False
    choices: Tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    def format(self, value: Any) -> str:
        """The editor text of ``value`` (``""`` for ``None``; lists as ``"2, 3, 4"``; floats in Python's shortest
        exact form)."""
        if value is None:
            return ""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind in ("ints", "floats", "strs"):
            return ", ".join(_scalar_text(v, self.kind[:-1]) for v in value)
        return _scalar_text(value, self.kind)

    def parse(self, text: Any) -> Any:
        """The value of an editor's text (or of a value of the right type: check boxes give ``bool``).

        Raises :class:`semisupseg.errors.InputError` naming the setting and what it expects."""
        from semisupseg.errors import InputError

        if not isinstance(text, str):
            text = self.format(text)
        text = text.strip()
        if text == "" or (self.optional and text.lower() in ("none", "null")):
            if self.optional:
                return None
            if self.kind in ("ints", "floats", "strs") or self.kind == "str":
                return () if self.kind != "str" else ""
            raise InputError(f"{self.key}: a value is needed ({self._expects()})")
        try:
            if self.kind in ("ints", "floats", "strs"):
                return tuple(_parse_scalar(part.strip(), self.kind[:-1]) for part in text.split(",") if part.strip())
            value = _parse_scalar(text, self.kind)
        except ValueError:
            raise InputError(f"{self.key}: {text!r} is not {self._expects()}") from None
        if self.kind == "choice" and self.choices and value not in self.choices:
            raise InputError(f"{self.key}: {text!r} is not {self._expects()}")
        return value

    def _expects(self) -> str:
        return {"bool": "true or false", "int": "a whole number", "float": "a number",
                "str": "a text", "choice": "one of " + ", ".join(self.choices),
                "ints": "whole numbers separated by commas", "floats": "numbers separated by commas",
                "strs": "words separated by commas"}[self.kind] + (" (or empty for none)" if self.optional else "")

    def override(self, value: Any) -> str:
        """``KEY=VALUE`` for ``--set``, read back exactly by ``semisupseg.training.config.parse_override``."""
        return f"{self.key}={_yaml_value(value, self.kind)}"

    def is_default(self, value: Any) -> bool:
        return _same(value, self.default)


# ----------------------------------------------------------------------------------------------------------------------
# values <-> text
# ----------------------------------------------------------------------------------------------------------------------

def _float_text(value: float) -> str:
    """A float as text that YAML (PyYAML, YAML 1.1) and Python both read as this float: ``repr`` with a decimal point
    in the mantissa and a signed exponent (``1e-05`` → ``1.0e-05``; PyYAML reads ``1e-05`` as a string)."""
    value = float(value)
    if not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        text = f"{mantissa}e{exponent}"
    elif "." not in text:
        text += ".0"
    return text


def _scalar_text(value: Any, kind: str) -> str:
    if kind == "float":
        return _float_text(value)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


def _parse_scalar(text: str, kind: str) -> Any:
    if kind == "bool":
        low = text.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ValueError(text)
    if kind == "int":
        number = float(text)
        if not number.is_integer():
            raise ValueError(text)
        return int(number)
    if kind == "float":
        return float(text)
    return text


def _yaml_value(value: Any, kind: str) -> str:
    if value is None:
        return "null"
    if kind in ("ints", "floats", "strs"):
        return "[" + ", ".join(_yaml_value(v, kind[:-1]) for v in value) + "]"
    if kind == "float":
        return _float_text(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    return json.dumps(str(value))  # quoted: 'on', 'null', '123' stay words


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return a is not None and b is not None and float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


# ----------------------------------------------------------------------------------------------------------------------
# dataclass -> fields
# ----------------------------------------------------------------------------------------------------------------------

def _kind_of(tp: Any) -> Tuple[Optional[str], bool, Tuple[str, ...]]:
    """``(kind, optional, choices)`` of an annotation; kind ``None`` when the form cannot edit it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 1:
            kind, _, choices = _kind_of(rest[0])
            return kind, optional, choices
        if set(rest) == {bool, str}:  # data.augment: legacy booleans or a policy name
            return "str", optional, ()
        return None, optional, ()
    if origin is typing.Literal:
        return "choice", False, tuple(str(a) for a in args)
    if origin in (list, tuple, typing.List, typing.Tuple, Sequence):
        item = args[0] if args else str
        kind, _, _ = _kind_of(item)
        if kind in ("int", "float", "str"):
            return kind + "s", False, ()
        return None, False, ()
    if tp is bool:
        return "bool", False, ()
    if tp is int:
        return "int", False, ()
    if tp is float:
        return "float", False, ()
    if tp is str:
        return "str", False, ()
    return None, False, ()


def _clean_rst(text: str) -> str:
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)  # :class:`X` -> X
    text = text.replace("``", "")
    return re.sub(r"\s+", " ", text).strip()


def _source_docs(cls: type) -> Dict[str, str]:
    """``{field: doc}`` from ``#:`` comments above the fields and strings below them, in ``cls``'s own source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    try:
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    except (SyntaxError, IndexError, AttributeError):
        return {}
    docs: Dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        comments: List[str] = []
        row = node.lineno - 2  # the line above, 0-based
        while row >= 0 and lines[row].strip().startswith("#:"):
            comments.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        nxt = body[i + 1] if i + 1 < len(body) else None
        if not comments and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                and isinstance(nxt.value.value, str):
            comments = [nxt.value.value]
        if comments:
            docs[name] = _clean_rst(" ".join(comments))
    return docs


def _clauses(text: str) -> List[str]:
    """``text`` cut after each ``.`` or ``;`` that is followed by a space and not inside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch in ".;" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            out.append(text[start:i + 1].strip())
            start = i + 1
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def _docstring_clauses(doc: str, name: str) -> str:
    """The sentences / semicolon clauses of a docstring that name ``name`` in double backquotes, joined."""
    if not doc:
        return ""
    text = re.sub(r"\s+", " ", inspect.cleandoc(doc)).replace("* ", " ")
    hits = [c for c in _clauses(text) if f"``{name}``" in c]
    return _clean_rst(" ".join(hits))


def field_docs(cls: type) -> Dict[str, str]:
    """The documentation of every field of the dataclass ``cls`` (inherited fields from the class defining them)."""
    names = [f.name for f in dataclasses.fields(cls)]
    docs: Dict[str, str] = {}
    for owner in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(owner) or owner is object:
            continue
        own = set(getattr(owner, "__annotations__", {}))
        source = _source_docs(owner)
        for name in names:
            if name not in own:
                continue
            text = source.get(name) or _docstring_clauses(owner.__doc__ or "", name)
            if text:
                docs[name] = text
            elif name not in docs:
                docs[name] = ""
    return docs


def _probe_choices(cls: type, name: str) -> Tuple[str, ...]:
    """The words a ``str`` field accepts, from the dataclass's own check of an unknown word (see module docstring)."""
    try:
        cls(**{name: _PROBE})
    except (ValueError, TypeError) as exc:
        message = str(exc)
    else:
        return ()
    if not message.startswith(name) and f" {name} " not in f" {message} ":
        return ()  # another field's complaint
    match = re.search(r"one of (\([^)]*\)|\[[^\]]*\])", message)
    if match:
        try:
            values = ast.literal_eval(match.group(1))
            return tuple(str(v) for v in values)
        except (ValueError, SyntaxError):
            return ()
    match = re.search(r"must be ((?:'[^']*'(?:, | or ))+'[^']*')", message)
    if match:
        return tuple(re.findall(r"'([^']*)'", match.group(1)))
    return ()


def _documented_choices(doc: str, default: Any) -> Tuple[str, ...]:
    """The double-quoted words a field's documentation lists (``"volume" (release) or "region" ...``) when there are
    at least two and the default is one of them; ``()`` otherwise."""
    words = tuple(dict.fromkeys(re.findall(r'"([A-Za-z][\w-]*)"', doc)))
    return words if len(words) >= 2 and default in words else ()


def dataclass_fields(cls: type, prefix: str = "", probe: bool = False) -> List[FormField]:
    """The editable fields of the dataclass ``cls`` in declaration order, keys ``prefix + name``. Fields of types
    the form cannot edit (mappings, nested dataclasses) are left out. ``probe``: find choices of ``str`` fields by
    asking the class's own checks (for method parameter classes, whose defaults construct)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: List[FormField] = []
    for f in dataclasses.fields(cls):
        kind, optional, choices = _kind_of(hints.get(f.name, Any))
        if kind is None:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        if isinstance(default, list):
            default = tuple(default)
        if kind == "str" and probe and not choices:
            choices = _probe_choices(cls, f.name) or _documented_choices(docs.get(f.name, ""), default)
        if choices:
            kind = "choice"
        out.append(FormField(prefix + f.name, f.name, kind, default, docs.get(f.name, ""), optional, choices))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# methods and the engine
# ----------------------------------------------------------------------------------------------------------------------

def method_names() -> List[Tuple[str, str]]:
    """``[(name, one-line description)]`` of every registered method, sorted by name (the Method combo box)."""
    from semisupseg.methods import list_methods

    return [(m.name, m.description) for m in list_methods()]


def editor_value(widget: Any) -> Any:
    """An editor's value: a path, a combo box's text, a spin box's number, a line edit's text, a check box's state
    (duck-typed on the Qt/CTK widget's properties; a check box also has a text, so ``checked`` comes first)."""
    for attr in ("currentPath", "currentText", "value", "checked", "text"):
        if hasattr(widget, attr):
            return getattr(widget, attr)
    return None


def make_editor(f: FormField, qt: Any) -> Any:
    """The Advanced section's editor of ``f``, built with the ``qt`` module given: a check box (``bool``), a combo
    box of the choices (``choice``), else a line edit (empty: ``none`` for an optional field); each shows the
    default and has the field's documentation as its tool tip."""
    if f.kind == "bool":
        editor = qt.QCheckBox()
        editor.checked = bool(f.default)
    elif f.kind == "choice":
        editor = qt.QComboBox()
        editor.addItems(list(f.choices))
        editor.currentText = f.format(f.default)
    else:
        editor = qt.QLineEdit(f.format(f.default))
        editor.placeholderText = "none" if f.optional else ""
    editor.toolTip = f.doc
    return editor


def set_editor_value(widget: Any, value: Any) -> None:
    """Show ``value`` in an editor, the inverse of :func:`editor_value`: a path, a combo box's text, a spin box's
    number, a check box's state, a line edit's text (``None`` as empty text). A combo box that lacks the text as an
    item gets it first (a non-editable one ignores other text: a run's overlay case before any data check, a
    ``cuda:1`` device, would silently read back as something else)."""
    for attr in ("currentPath", "currentText", "value", "checked", "text"):
        if hasattr(widget, attr):
            if attr in ("currentPath", "currentText", "text"):
                value = "" if value is None else str(value)
            if attr == "currentText" and value and hasattr(widget, "findText") and widget.findText(value) < 0:
                widget.addItem(value)
            setattr(widget, attr, value)
            return
    raise TypeError(f"not an editor: {widget!r}")


#: the Method box's note while torch is missing (the methods cannot be read without it)
NOT_INSTALLED_NOTE = ("The Python packages SemiSupSeg trains with (PyTorch and others) are not installed yet: "
                      "Check data, Start or Rank installs them after one question.")


def method_choices() -> Tuple[List[Tuple[str, str]], Optional[str]]:
    """:func:`method_names` and ``None``; before torch is installed ``([], note)`` (the panel opens all the same
    and says how the packages get installed)."""
    try:
        return method_names(), None
    except ImportError as exc:
        return [], f"{NOT_INSTALLED_NOTE} ({exc})"


def method_fields(method: str) -> List[FormField]:
    """The Advanced fields of the registered method ``method``: its ``Params`` dataclass, keys
    ``method_params.NAME``. Raises :class:`semisupseg.errors.InputError` for an unknown method."""
    from semisupseg.errors import InputError
    from semisupseg.methods import get_method

    try:
        cls = get_method(method)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    return dataclass_fields(cls.Params, prefix="method_params.", probe=True)


def engine_fields(keys: Sequence[str] = ENGINE_KEYS) -> List[FormField]:
    """Generic engine settings of :class:`semisupseg.training.TrainConfig` (dotted ``keys``), with the choices the
    config accepts."""
    from semisupseg.data.augment import AUGMENTATIONS
    from semisupseg.data.perturb import PERTURBATIONS
    from semisupseg.training import config as config_module

    choices = {"amp": config_module.AMP_MODES, "channels_last": config_module.CHANNELS_LAST_MODES,
               "ema_buffers": config_module.EMA_BUFFER_MODES, "optim.name": config_module.OPTIMIZERS,
               "optim.schedule": config_module.LR_SCHEDULES, "data.augment": AUGMENTATIONS,
               "data.perturb": PERTURBATIONS}
    by_key: Dict[str, FormField] = {}
    for prefix, cls in (("", config_module.TrainConfig), ("data.", config_module.DataConfig),
                        ("model.", config_module.ModelConfig), ("optim.", config_module.OptimConfig),
                        ("overlays.", config_module.OverlayConfig)):
        for f in dataclass_fields(cls, prefix):
            by_key[f.key] = f
    out = []
    for key in keys:
        if key not in by_key:
            raise KeyError(f"no editable config key {key!r}")
        f = by_key[key]
        if not f.doc and key in _ENGINE_NOTES:
            f = dataclasses.replace(f, doc=_ENGINE_NOTES[key])
        if key in choices:
            f = dataclasses.replace(f, kind="choice", choices=tuple(choices[key]), default=str(f.default))
        out.append(f)
    return out


def parse_values(fields: Iterable[FormField], texts: Mapping[str, Any]) -> Dict[str, Any]:
    """``{key: value}`` from the editors' ``{key: text or value}`` (keys not in ``texts`` keep their defaults).
    Raises :class:`semisupseg.errors.InputError` for the first bad entry, naming it."""
    return {f.key: (f.parse(texts[f.key]) if f.key in texts else f.default) for f in fields}


def overrides(fields: Iterable[FormField], values: Mapping[str, Any]) -> List[str]:
    """``KEY=VALUE`` strings for the values that differ from their field's default, in field order."""
    out = []
    for f in fields:
        if f.key in values and not f.is_default(values[f.key]):
            out.append(f.override(values[f.key]))
    return out


def set_arguments(override_strings: Iterable[str]) -> List[str]:
    """``["--set", "a=1", "--set", "b=2"]``."""
    out: List[str] = []
    for text in override_strings:
        out += ["--set", text]
    return out


def validate_method_params(method: str, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Build ``method``'s ``Params`` with ``values`` (``{name or method_params.name: value}``) so that its own checks
    run now; returns ``{name: value}``. Raises :class:`semisupseg.errors.InputError` with the method's message."""
    from semisupseg.errors import InputError
    from semisupseg.methods import get_method

    params = {k.split("method_params.", 1)[-1]: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    try:
        get_method(method).make_params(params)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{method} parameters: {exc}") from None
    return params


__all__ = ["ENGINE_KEYS", "FormField", "KINDS", "NOT_INSTALLED_NOTE", "dataclass_fields", "editor_value",
           "engine_fields", "field_docs", "make_editor", "method_choices", "method_fields", "method_names", "overrides",
           "parse_values", "set_arguments", "set_editor_value", "validate_method_params"]
