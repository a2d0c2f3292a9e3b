"""One catalogue of models, read by the CLI (``semisupseg models``, ``segment --model NAME``) and both Slicer modules.

Three sources, listed in this order:

* ``shipped``: model files delivered with the package, ``semisupseg/models/<name>.pt`` (card inside, ``<name>.json``
  beside it); the name is the file stem. Read-only.
* ``user``: model files the user added (``semisupseg models add FILE [--name N]``, the module's "Add model file…").
* ``run``: training runs registered by name (``register_run``; the training module does it for its runs). A run
  entry points at its folder and resolves, each time it is read, to the run's ``best.pt``, else ``last.pt``, so a
  run registered while training always gives its current best model.

User and run entries live in one JSON registry, ``<home>/models.json``, where ``home`` is the ``home`` argument,
else the environment variable ``SEMISUPSEG_HOME``, else ``~/.semisupseg``. Layout (format 1)::

    {"format": 1,
     "models": [{"name": "my-la", "source": "user", "path": "/abs/path/model.pt", "added": "2025-01-01T12:00:00+00:00"},
                {"name": "la-run", "source": "run", "run_dir": "/abs/path/run", "added": "..."}]}

Paths are stored absolute (a hand-edited relative path makes its entry unusable, with an ``error`` saying so,
rather than naming a different file in each working folder). The registry is rewritten atomically (temporary file + rename) under an advisory lock
(POSIX ``flock`` on ``models.json.lock``) so the CLI and Slicer adding models at the same time lose nothing. A file
that went missing is listed with its ``error`` (never an exception while listing); using it
(:meth:`ModelCatalogue.resolve`) raises an :class:`~semisupseg.errors.InputError` naming the file.

Names: letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit; not ending in ``.pt`` (so a name and a
model file path can never be confused). A user or run name may not shadow a shipped name, nor another entry
(:class:`CatalogueError`); without an explicit name, the file stem (or run folder name) is used and made unique
with ``-2``, ``-3``…
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from semisupseg.errors import InputError

PathLike = Union[str, os.PathLike]

#: folder of the models shipped with the package
SHIPPED_DIR = Path(__file__).resolve().parent / "models"
#: environment variable naming the catalogue home (registry of user and run models)
HOME_ENV = "SEMISUPSEG_HOME"
#: file name of the registry inside the home
REGISTRY_NAME = "models.json"
REGISTRY_FORMAT = 1
SOURCES = ("shipped", "user", "run")
#: model files of a training run, in order of preference
RUN_MODEL_FILES = ("best.pt", "last.pt")
#: files by which a folder is recognised as a training run (one suffices; ``train`` writes the first two at start)
RUN_MARKER_FILES = ("config.yaml", "events.jsonl") + RUN_MODEL_FILES
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = ["ModelCatalogue", "ModelEntry", "CatalogueError", "default_home", "resolve_model", "SHIPPED_DIR",
           "HOME_ENV"]


class CatalogueError(InputError):
    """A catalogue operation that cannot be done (unknown or clashing name, unreadable registry)."""


def default_home() -> Path:
    """``$SEMISUPSEG_HOME`` if set (and not empty), else ``~/.semisupseg``."""
    env = os.environ.get(HOME_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".semisupseg"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def check_name(name: str) -> str:
    """``name`` if it is a valid catalogue name, else :class:`CatalogueError` saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CatalogueError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                             "letter or digit")
    if name.lower().endswith(".pt"):
        raise CatalogueError(f"invalid model name {name!r}: a name must not end in .pt (that reads as a file)")
    return name


def _name_from(stem: str) -> str:
    """A valid name made from a file stem or folder name (other characters become ``-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"
    if name.lower().endswith(".pt"):
        name = name[:-3] or "model"
    return name


@dataclass
class ModelEntry:
    """One model of the catalogue.

    * ``name``: short name (``segment --model NAME``); ``source``: ``"shipped"``, ``"user"`` or ``"run"``;
    * ``path``: absolute path of the model file (for a run: its ``best.pt``, else ``last.pt``; the expected
      ``best.pt`` when neither exists);
    * ``card``: its :class:`~semisupseg.checkpoint.ModelCard` (``None`` when not read or unreadable);
    * ``error``: why the entry cannot be used (missing file, not a model file), else ``None``;
    * ``run_dir``: the training run folder (run entries); ``added``: ISO 8601 UTC time it was registered.
    """

    name: str
    path: Path
    source: str
    card: Optional[Any] = None
    error: Optional[str] = None
    run_dir: Optional[Path] = None
    added: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def method(self) -> Optional[str]:
        return self.card.method if self.card is not None else None

    @property
    def classes(self) -> List[str]:
        """Class names without the background (empty when the card is unknown)."""
        return list(self.card.class_names[1:]) if self.card is not None else []

    @property
    def spacing_xyz(self) -> Optional[tuple]:
        return tuple(self.card.spacing_xyz) if self.card is not None else None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (``semisupseg models --json``, the Slicer model list)."""
        return {"name": self.name, "source": self.source, "path": str(self.path),
                "run_dir": str(self.run_dir) if self.run_dir is not None else None, "added": self.added,
                "error": self.error, "method": self.method, "classes": self.classes,
                "spacing_xyz": list(self.spacing_xyz) if self.spacing_xyz is not None else None,
                "card": self.card.to_dict() if self.card is not None else None}


class ModelCatalogue:
    """The models a user can pick by name: shipped, user-added and training runs (see the module docstring).

    ``home``: folder of the registry (default :func:`default_home`); ``shipped_dir``: folder of the shipped models
    (default ``semisupseg/models``; tests point it elsewhere). Nothing is created until something is added.
    Instances hold no state besides the two folders: every call reads the registry afresh, so several processes
    (the CLI, Slicer) see each other's changes.
    """

    def __init__(self, home: Optional[PathLike] = None, shipped_dir: Optional[PathLike] = None):
        self.home = Path(home).expanduser().resolve() if home is not None else default_home().resolve()
        self.shipped_dir = Path(shipped_dir).resolve() if shipped_dir is not None else SHIPPED_DIR

    @property
    def registry_path(self) -> Path:
        return self.home / REGISTRY_NAME

    # ------------------------------------------------------------------------------------------------ reading
    def _read_registry(self) -> List[Dict[str, Any]]:
        path = self.registry_path
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
            raise CatalogueError(f"the model registry cannot be read ({str(exc)[:200]}); fix or remove the file",
                                 path) from None
        except RecursionError:
            raise CatalogueError("the model registry cannot be read (nested too deeply); fix or remove the file",
                                 path) from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise CatalogueError("the model registry is not a {'format': 1, 'models': [...]} object; fix or remove "
                                 "the file", path)
        fmt = data.get("format", REGISTRY_FORMAT)
        if not isinstance(fmt, int) or fmt > REGISTRY_FORMAT:
            raise CatalogueError(f"the model registry has format {fmt!r}; this version reads format "
                                 f"<= {REGISTRY_FORMAT}. Upgrade semisupseg", path)
        records = []
        for i, rec in enumerate(data["models"]):
            if (not isinstance(rec, dict) or not isinstance(rec.get("name"), str)
                    or rec.get("source") not in ("user", "run")
                    or not isinstance(rec.get("path" if rec.get("source") == "user" else "run_dir"), str)):
                raise CatalogueError(f"entry {i} of the model registry is malformed ({rec!r}); fix or remove it", path)
            records.append(rec)
        return records

    def _write_registry(self, records: List[Dict[str, Any]]) -> None:
        from semisupseg.fileio import write_text_atomic

        text = json.dumps({"format": REGISTRY_FORMAT, "models": records}, indent=2) + "\n"
        write_text_atomic(text, self.registry_path, overwrite=True, fsync=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock around a read-modify-write of the registry, so that the Slicer module and the command line
        writing at once lose no entry: ``flock`` on POSIX, ``msvcrt.locking`` on Windows (retried while another
        process holds it)."""
        if self.home.exists() and not self.home.is_dir():
            raise CatalogueError(f"the catalogue home is a file, not a folder (it holds {REGISTRY_NAME}): give a "
                                 f"folder with --home or {HOME_ENV}", self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            with self._locked_windows():
                yield
            return
        with open(self.home / (REGISTRY_NAME + ".lock"), "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _locked_windows(self) -> Iterator[None]:
        try:
            import msvcrt
        except ImportError:  # neither POSIX nor Windows: a single writer is assumed
            yield
            return
        with open(self.home / (REGISTRY_NAME + ".lock"), "a+") as fh:
            fh.seek(0)
            deadline = time.monotonic() + 120.0
            while True:  # LK_LOCK itself retries for 10 s, then raises
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise CatalogueError("the model catalogue stays locked by another process",
                                             self.home / (REGISTRY_NAME + ".lock")) from None
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

    def _shipped(self) -> List[ModelEntry]:
        if not self.shipped_dir.is_dir():
            return []
        return [ModelEntry(name=p.stem, path=p.resolve(), source="shipped")
                for p in sorted(self.shipped_dir.glob("*.pt")) if p.is_file()]

    @staticmethod
    def _entry_from_record(rec: Dict[str, Any]) -> ModelEntry:
        where = Path(rec["path"] if rec["source"] == "user" else rec["run_dir"])
        if not where.is_absolute():  # hand-edited: it would name another file in every working folder
            return ModelEntry(name=rec["name"], path=where, source=rec["source"], added=rec.get("added"),
                              run_dir=where if rec["source"] == "run" else None,
                              error=f"the registry gives a relative path ({where}); remove the entry and add the "
                                    "model again")
        if rec["source"] == "user":
            return ModelEntry(name=rec["name"], path=Path(rec["path"]), source="user", added=rec.get("added"))
        run_dir = Path(rec["run_dir"])
        path = next((run_dir / f for f in RUN_MODEL_FILES if (run_dir / f).is_file()), run_dir / RUN_MODEL_FILES[0])
        return ModelEntry(name=rec["name"], path=path, source="run", run_dir=run_dir, added=rec.get("added"))

    @staticmethod
    def _check_file(entry: ModelEntry, read_card: bool) -> ModelEntry:
        """Fill ``error`` (and ``card`` when ``read_card``) without raising."""
        if entry.source == "run" and entry.run_dir is not None and not entry.run_dir.is_dir():
            entry.error = f"training run folder not found: {entry.run_dir}"
        elif entry.source == "run" and not entry.path.is_file():
            entry.error = f"the training run has no model file yet ({' or '.join(RUN_MODEL_FILES)} in {entry.run_dir})"
        elif not entry.path.is_file():
            entry.error = f"model file not found: {entry.path}"
        elif read_card:
            from semisupseg.checkpoint import read_card as _read_card
            from semisupseg.errors import SemiSupSegError

            try:
                entry.card = _read_card(entry.path)
            except SemiSupSegError as exc:
                entry.error = str(exc)
        return entry

    def entries(self, read_cards: bool = True) -> List[ModelEntry]:
        """Every model: shipped first (sorted by name), then the registry's in the order they were added.

        A missing or unreadable file gives an entry with ``error`` set (and ``card`` ``None``); only an unreadable
        registry raises (:class:`CatalogueError` naming it). ``read_cards=False`` skips opening the model files
        (existence is still checked).
        """
        shipped = self._shipped()
        registered = [self._entry_from_record(r) for r in self._read_registry()]
        shipped_names = {e.name for e in shipped}
        for e in registered:  # a model shipped after the user chose the same name
            if e.name in shipped_names:
                e.error = (f"shadowed by the shipped model of the same name; remove it and add it again with "
                           f"another name ('semisupseg models remove {e.name}')")
        return [self._check_file(e, read_cards) if e.error is None else e for e in shipped + registered]

    def names(self) -> List[str]:
        return [e.name for e in self.entries(read_cards=False)]

    def get(self, name: str, read_card: bool = True) -> ModelEntry:
        """The entry called ``name`` (its ``error`` may be set); :class:`CatalogueError` listing the known names when
        there is none."""
        entries = self.entries(read_cards=False)
        for e in entries:
            if e.name == name:
                return self._check_file(e, read_card) if read_card and e.error is None else e
        known = ", ".join(e.name for e in entries) or "none"
        raise CatalogueError(f"no model named {name!r} in the catalogue (known: {known}; 'semisupseg models' lists "
                             "them, 'semisupseg models add FILE' adds one)")

    def resolve(self, name_or_path: PathLike) -> Path:
        """The model file for a catalogue name or a path.

        A catalogue name wins; otherwise an existing file is returned as an absolute path, and a folder is taken
        for a training run: its ``best.pt``, else ``last.pt`` (:data:`RUN_MODEL_FILES`, as for a registered run).
        A name whose file is missing, a path that does not exist, a folder holding neither file and an unknown
        name each raise an :class:`InputError` naming the problem (the file, or the known names).
        """
        text = os.fspath(name_or_path)
        looks_like_name = bool(NAME_PATTERN.match(text)) and not text.lower().endswith(".pt")
        entries = self.entries(read_cards=False) if looks_like_name else []
        for e in entries:
            if e.name == text:
                if e.error is not None:
                    raise CatalogueError(f"model {e.name!r} ({e.source}) cannot be used: {e.error}")
                return e.path
        path = Path(text).expanduser()
        if path.is_file():
            return path.resolve()
        if path.is_dir():  # a training run's folder: its model, as for a registered run (best.pt, else last.pt)
            found = next((path / f for f in RUN_MODEL_FILES if (path / f).is_file()), None)
            if found is None:
                raise InputError(f"holds no {' or '.join(RUN_MODEL_FILES)}: is it a training run that has saved a "
                                 "model yet?", path)
            return found.resolve()
        if looks_like_name:
            known = ", ".join(e.name for e in entries) or "none"
            raise CatalogueError(f"{text!r} is neither a model name of the catalogue (known: {known}; "
                                 "'semisupseg models' lists them) nor an existing model file")
        raise InputError("model file not found", path)

    # ---------------------------------------------------------------------------------------------- changing
    def _unique(self, base: str, taken: set) -> str:
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def _claim_name(self, name: Optional[str], default: str, records: List[Dict[str, Any]]) -> str:
        shipped = {e.name for e in self._shipped()}
        registered = {r["name"]: r for r in records}
        if name is None:
            return self._unique(_name_from(default), shipped | set(registered))
        check_name(name)
        if name in shipped:
            raise CatalogueError(f"the name {name!r} belongs to a model shipped with semisupseg; choose another name")
        if name in registered:
            rec = registered[name]
            where = rec.get("path") or rec.get("run_dir")
            raise CatalogueError(f"the name {name!r} is already used by a {rec['source']} model ({where}); choose "
                                 f"another name or remove it first ('semisupseg models remove {name}')")
        return name

    def add(self, path: PathLike, name: Optional[str] = None) -> ModelEntry:
        """Register the model file ``path`` as a user model called ``name`` (default: the file stem, made unique).

        The file must exist and be a SemiSupSeg model file (its card is read: a raw state_dict or a non-model file
        is refused with the :class:`~semisupseg.errors.CheckpointError` of :func:`~semisupseg.checkpoint.read_card`).
        Adding a file that is already registered as a user model without a new name returns that entry unchanged.
        """
        from semisupseg.checkpoint import read_card

        path = Path(path).expanduser()
        if not path.exists():
            raise InputError("model file not found", path)
        if path.is_dir():
            raise InputError("is a folder; give a model file (.pt) or register a training run", path)
        path = path.resolve()
        card = read_card(path)
        with self._locked():
            records = self._read_registry()
            for rec in records:
                if rec["source"] == "user" and Path(rec["path"]) == path and name in (None, rec["name"]):
                    return ModelEntry(name=rec["name"], path=path, source="user", card=card, added=rec.get("added"))
            final = self._claim_name(name, path.stem, records)
            rec = {"name": final, "source": "user", "path": str(path), "added": _now()}
            self._write_registry(records + [rec])
        return ModelEntry(name=final, path=path, source="user", card=card, added=rec["added"])

    def register_run(self, run_dir: PathLike, name: Optional[str] = None) -> ModelEntry:
        """Register a training run folder under ``name`` (default: the folder name, made unique); the entry gives
        the run's ``best.pt``, else its ``last.pt``, each time it is read. The folder must exist and be a training
        run, i.e. hold one of :data:`RUN_MARKER_FILES` (it may not have a model yet: the entry then reports that);
        any other folder is refused (:class:`InputError`) and nothing is added. Registering the same folder again
        without a new name returns its entry."""
        run_dir = Path(run_dir).expanduser()
        if not run_dir.is_dir():
            raise InputError("training run folder not found" if not run_dir.exists() else "is not a folder", run_dir)
        if not any((run_dir / f).is_file() for f in RUN_MARKER_FILES):
            raise InputError(f"is not a training run folder (none of {', '.join(RUN_MARKER_FILES)}); nothing was "
                             "registered", run_dir)
        run_dir = run_dir.resolve()
        with self._locked():
            records = self._read_registry()
            for rec in records:
                if rec["source"] == "run" and Path(rec["run_dir"]) == run_dir and name in (None, rec["name"]):
                    return self._check_file(self._entry_from_record(rec), True)
            final = self._claim_name(name, run_dir.name, records)
            rec = {"name": final, "source": "run", "run_dir": str(run_dir), "added": _now()}
            self._write_registry(records + [rec])
        return self._check_file(self._entry_from_record(rec), True)

    def remove(self, name: str) -> ModelEntry:
        """Forget the user or run model ``name`` (its files are left alone); returns the removed entry. Shipped
        models cannot be removed; an unknown name is a :class:`CatalogueError`."""
        if name in {e.name for e in self._shipped()}:
            raise CatalogueError(f"{name!r} is shipped with semisupseg and cannot be removed")
        with self._locked():
            records = self._read_registry()
            keep = [r for r in records if r["name"] != name]
            if len(keep) == len(records):
                known = ", ".join(r["name"] for r in records) or "none"
                raise CatalogueError(f"no user or run model named {name!r} (registered: {known})")
            self._write_registry(keep)
        removed = next(r for r in records if r["name"] == name)
        return self._entry_from_record(removed)


def resolve_model(name_or_path: PathLike, home: Optional[PathLike] = None) -> Path:
    """``ModelCatalogue(home).resolve(name_or_path)``: what ``segment --model`` and ``info`` accept (a catalogue
    name, a model file, or a training run's folder)."""
    return ModelCatalogue(home).resolve(name_or_path)
