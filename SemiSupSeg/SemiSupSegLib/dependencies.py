"""The Python packages ``semisupseg`` needs inside Slicer: what is missing, what would be installed, and how.

Rules (the failures of other extensions they avoid are in the comments):

* **torch** only through the PyTorch extension (``PyTorchUtils``), which picks the CUDA or CPU build for the machine;
  when the extension is missing the user is told so and offered its installation (Slicer then needs a restart).
* **Slicer's own packages** (numpy, SimpleITK, vtk) are never installed, upgraded or replaced — Slicer is built
  against them (SimpleITK carries Slicer's IO). Our other installs run with them pinned to the installed versions.
  A too old one is reported, not "fixed".
* Everything else the package needs (h5py, PyYAML, tqdm, scipy where Slicer lacks it) is checked with ``packaging`` +
  ``importlib.metadata`` first; when something is missing, **one** confirmation lists all of it (torch included);
  then ``slicer.packaging.pip_ensure`` installs it where the running Slicer has that API, ``slicer.util.pip_install``
  otherwise. A failed install stops with its message.
* Slicer older than :data:`MIN_SLICER` is refused with a clear message.

The decisions are pure functions of an :class:`Environment` (facts gathered by :func:`probe_environment`):
:func:`plan_dependencies` → :class:`Plan`. :func:`apply_plan` carries a plan out through injected callables
(:class:`Installers`), so the whole logic is tested without Slicer; :func:`slicer_installers` builds the real ones
inside the application.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

#: oldest supported Slicer (major, minor): Python 3.9, the PyTorch extension, markups ROI nodes
MIN_SLICER: Tuple[int, int] = (5, 6)
#: the run-time requirements of the ``semisupseg`` package, as in ``pyproject.toml`` ``[project].dependencies``
#: (a test keeps the two identical; inside Slicer the package is installed as files, without pip metadata)
PACKAGE_REQUIREMENTS: Tuple[str, ...] = (
    "torch>=2.1",
    "numpy>=1.21",
    "scipy>=1.7",
    "SimpleITK>=2.1",
    "h5py>=3.0",
    "tqdm>=4.60",
    "PyYAML>=5.4",
)
#: packages that come with Slicer and must never be installed or replaced by an extension
SLICER_OWNED: FrozenSet[str] = frozenset({"numpy", "simpleitk", "vtk"})
#: installed through the PyTorch extension, never through pip directly
TORCH = "torch"
PYTORCH_EXTENSION = "PyTorch"
REQUESTER = "SemiSupSeg"


class DependencyError(RuntimeError):
    """A requirement cannot be met (message: what and why, one paragraph for a dialog)."""


class RestartRequired(DependencyError):
    """Something was installed that takes effect only after Slicer restarts (the PyTorch extension)."""


@dataclass(frozen=True)
class Environment:
    """Facts about the running Slicer, as :func:`probe_environment` finds them.

    * ``slicer_version``: ``(major, minor)`` or ``None`` when unknown (not inside the application);
    * ``installed``: canonical distribution name → installed version string, for every requirement's name
      (``None``: not installed);
    * ``pytorch_extension``: the PyTorch extension's ``PyTorchUtils`` module is importable;
    * ``pip_ensure_params``: parameter names of ``slicer.packaging.pip_ensure``, ``None`` when this Slicer lacks it;
    * ``pip_install``: ``slicer.util.pip_install`` exists.
    """

    slicer_version: Optional[Tuple[int, int]]
    installed: Mapping[str, Optional[str]]
    pytorch_extension: bool
    pip_ensure_params: Optional[FrozenSet[str]] = None
    pip_install: bool = True


@dataclass
class Plan:
    """What has to happen before ``semisupseg`` can run (nothing, when :attr:`ready`).

    * ``problems``: what no install may fix here (Slicer too old, a Slicer-owned package too old);
    * ``need_pytorch_extension``: the PyTorch extension must be installed (then Slicer restarted);
    * ``torch``: the torch version specifier to install through the extension (``None``: torch is fine);
    * ``pip``: requirement strings to install with pip, in the package's order;
    * ``installer``: ``"pip_ensure"`` or ``"pip_install"`` for ``pip`` (``None`` when ``pip`` is empty);
    * ``constraints``: ``name==version`` pins of the Slicer-owned packages, applied to every pip install.
    """

    problems: List[str] = field(default_factory=list)
    need_pytorch_extension: bool = False
    torch: Optional[str] = None
    pip: List[str] = field(default_factory=list)
    installer: Optional[str] = None
    constraints: List[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not (self.problems or self.need_pytorch_extension or self.torch is not None or self.pip)

    def confirmation_text(self) -> str:
        """The one question asked before anything is installed (empty when nothing would be)."""
        items = []
        if self.need_pytorch_extension:
            items.append(f"the {PYTORCH_EXTENSION} extension (from the Extensions Manager; Slicer must then be "
                         "restarted, and PyTorch is installed by it on the next Segment)")
        if self.torch is not None:
            items.append(f"PyTorch ({TORCH}{self.torch}) through the {PYTORCH_EXTENSION} extension, which picks the "
                         "GPU or CPU build for this computer (a large download)")
        items.extend(f"{req} (pip)" for req in self.pip)
        if not items:
            return ""
        kept = ", ".join(c.split("==")[0] for c in self.constraints)
        text = "SemiSupSeg needs these Python packages, which are missing or too old:\n\n" + \
            "\n".join(f"  - {item}" for item in items)
        if kept:
            text += f"\n\nSlicer's own {kept} stay as they are."
        return text + "\n\nInstall them now?"


def parse_slicer_version(text: object) -> Optional[Tuple[int, int]]:
    """``"5.8.1"``, ``"5.11.0-2026-03-01"`` (a preview's ``applicationVersion``), ``(5, 8)`` → ``(5, 8)``;
    ``None`` when it cannot be read."""
    if isinstance(text, (tuple, list)) and len(text) >= 2:
        try:
            return int(text[0]), int(text[1])
        except (TypeError, ValueError):
            return None
    match = re.match(r"\s*(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def slicer_version_problem(version: Optional[Tuple[int, int]]) -> Optional[str]:
    """A message when ``version`` is older than :data:`MIN_SLICER` (``None``: fine or unknown)."""
    if version is not None and tuple(version) < MIN_SLICER:
        return (f"SemiSupSeg needs 3D Slicer {MIN_SLICER[0]}.{MIN_SLICER[1]} or newer; this is "
                f"{version[0]}.{version[1]}. Install a current Slicer from https://download.slicer.org")
    return None


def choose_installer(pip_ensure_params: Optional[FrozenSet[str]], pip_install: bool) -> Optional[str]:
    """``"pip_ensure"`` when this Slicer has ``slicer.packaging.pip_ensure`` taking the keywords we pass
    (``requester`` and a way to skip its own prompt, since we ask once for everything), else ``"pip_install"``
    (``slicer.util.pip_install``, every supported Slicer), else ``None``."""
    if pip_ensure_params is not None and {"requester", "prompt_install"} <= set(pip_ensure_params):
        return "pip_ensure"
    return "pip_install" if pip_install else None


def requirement_names(requirements: Sequence[str] = PACKAGE_REQUIREMENTS) -> List[str]:
    """Canonical distribution names of ``requirements`` (what :func:`probe_environment` must look up)."""
    return [canonicalize_name(Requirement(r).name) for r in requirements]


def _satisfied(req: Requirement, version: Optional[str]) -> bool:
    if version is None:
        return False
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def plan_dependencies(env: Environment, requirements: Sequence[str] = PACKAGE_REQUIREMENTS) -> Plan:
    """Decide what must be installed (and how) for ``requirements`` in ``env``; see :class:`Plan`. Pure."""
    plan = Plan()
    problem = slicer_version_problem(env.slicer_version)
    if problem:
        plan.problems.append(problem)
    installed = {canonicalize_name(k): v for k, v in env.installed.items()}
    for name in sorted(SLICER_OWNED):
        if installed.get(name):
            plan.constraints.append(f"{name}=={installed[name]}")
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        version = installed.get(name)
        if _satisfied(req, version):
            continue
        if name == TORCH:
            if env.pytorch_extension:
                plan.torch = str(req.specifier)
            else:
                plan.need_pytorch_extension = True
        elif name in SLICER_OWNED:
            have = f"version {version}" if version else "it is missing"
            plan.problems.append(f"{req.name}{req.specifier} is needed but Slicer's own {req.name} cannot be "
                                 f"replaced ({have}); use a newer Slicer")
        else:
            plan.pip.append(text)
    if plan.pip:
        plan.installer = choose_installer(env.pip_ensure_params, env.pip_install)
        if plan.installer is None:
            plan.problems.append("this Slicer has no way to install Python packages (neither "
                                 "slicer.packaging.pip_ensure nor slicer.util.pip_install): install "
                                 + ", ".join(plan.pip) + " with PythonSlicer -m pip")
    return plan


@dataclass
class Installers:
    """The Slicer calls :func:`apply_plan` makes (injected; :func:`slicer_installers` builds the real ones).

    * ``confirm(title, text) -> bool``: the one question to the user;
    * ``install_extension(name) -> bool``: install an extension from the Extensions Manager server;
    * ``install_torch(specifier) -> bool``: ``PyTorchUtilsLogic().installTorch`` without its own prompt;
    * ``pip_ensure(requirements: list[Requirement], **kwargs)``, ``pip_install(args: list[str])``: raise on failure;
    * ``probe() -> Environment``: re-read the environment after installing.
    """

    confirm: Callable[[str, str], bool]
    install_extension: Callable[[str], bool]
    install_torch: Callable[[str], bool]
    pip_install: Optional[Callable[[List[str]], object]]
    pip_ensure: Optional[Callable[..., object]]
    probe: Callable[[], Environment]


def pip_install_arguments(plan: Plan, constraints_file: Optional[str]) -> List[str]:
    """The arguments for ``slicer.util.pip_install`` (requirements, then the constraints file), as a list: Slicer
    5.6-5.10 split a string with ``shlex``, which drops the backslashes of a Windows path and breaks it at spaces;
    each item of a list reaches pip as it is."""
    return list(plan.pip) + (["-c", str(constraints_file)] if constraints_file else [])


def apply_plan(plan: Plan, installers: Installers, requirements: Sequence[str] = PACKAGE_REQUIREMENTS) -> Plan:
    """Carry ``plan`` out: one confirmation, then pip packages, torch, the PyTorch extension; re-check.

    Returns the re-checked plan (ready). Raises :class:`DependencyError` when there are problems, the user
    declines, an install fails (its message included) or the re-check still finds something missing;
    :class:`RestartRequired` after installing the PyTorch extension (everything else is installed first).
    """
    if plan.problems:
        raise DependencyError("\n".join(plan.problems))
    if plan.ready:
        return plan
    if not installers.confirm("SemiSupSeg: install Python packages", plan.confirmation_text()):
        raise DependencyError("SemiSupSeg cannot run without: " + ", ".join(
            ([f"the {PYTORCH_EXTENSION} extension"] if plan.need_pytorch_extension else [])
            + ([f"{TORCH}{plan.torch}"] if plan.torch is not None else []) + plan.pip) + " (installation declined)")
    if plan.pip:
        _pip(plan, installers)
    if plan.torch is not None:
        try:
            ok = installers.install_torch(plan.torch)
        except Exception as exc:  # the extension's own error, passed on verbatim
            raise DependencyError(f"installing PyTorch ({TORCH}{plan.torch}) failed: {exc}") from exc
        if not ok:
            raise DependencyError(f"installing PyTorch ({TORCH}{plan.torch}) failed or was cancelled; install it "
                                  "in the PyTorch Utils module and try again")
    if plan.need_pytorch_extension:
        try:
            ok = installers.install_extension(PYTORCH_EXTENSION)
        except Exception as exc:
            raise DependencyError(f"installing the {PYTORCH_EXTENSION} extension failed: {exc}") from exc
        if not ok:
            raise DependencyError(f"the {PYTORCH_EXTENSION} extension could not be installed from the server; "
                                  "install it in the Extensions Manager and restart Slicer")
        raise RestartRequired(f"the {PYTORCH_EXTENSION} extension was installed: restart Slicer, then click "
                              "Segment again (PyTorch itself is installed then)")
    after = plan_dependencies(installers.probe(), requirements)
    if not after.ready:
        missing = after.pip + ([f"{TORCH}{after.torch}"] if after.torch is not None else []) + after.problems
        raise DependencyError("still missing after the installation: " + ", ".join(missing))
    return after


def _pip(plan: Plan, installers: Installers) -> None:
    fd, constraints_file = tempfile.mkstemp(prefix="semisupseg-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(plan.constraints) + "\n")
        if plan.installer == "pip_ensure" and installers.pip_ensure is not None:
            installers.pip_ensure([Requirement(r) for r in plan.pip], requester=REQUESTER, prompt_install=False,
                                  **({"constraints": constraints_file} if plan.constraints else {}))
        elif installers.pip_install is not None:
            installers.pip_install(pip_install_arguments(plan, constraints_file if plan.constraints else None))
        else:
            raise DependencyError("no Python package installer available in this Slicer")
    except DependencyError:
        raise
    except Exception as exc:  # pip's CalledProcessError / Slicer's InstallationAbortedError: stop, with the reason
        detail = getattr(exc, "stderr", None) or getattr(exc, "output", None) or exc
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise DependencyError(f"installing {', '.join(plan.pip)} failed: {str(detail).strip()}") from exc
    finally:
        os.unlink(constraints_file)


# ----------------------------------------------------------------------------------------------------------------------
# The real environment (impure; inside Slicer, or any Python for the parts that exist there)
# ----------------------------------------------------------------------------------------------------------------------

def installed_version(name: str) -> Optional[str]:
    """Installed version of distribution ``name`` (``importlib.metadata``), ``None`` when absent."""
    for candidate in dict.fromkeys((name, canonicalize_name(name), canonicalize_name(name).replace("-", "_"))):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _slicer_version(slicer_module) -> Optional[Tuple[int, int]]:
    app = getattr(slicer_module, "app", None)
    if app is None:
        return None
    try:
        return int(app.majorVersion), int(app.minorVersion)
    except (AttributeError, TypeError, ValueError):
        return parse_slicer_version(getattr(app, "applicationVersion", None))


def _pip_ensure(slicer_module) -> Optional[Callable[..., object]]:
    """Slicer's ``slicer.packaging.pip_ensure`` (5.9+), else ``None``. ``slicer.packaging`` is a submodule that
    ``import slicer`` does not import: it is imported here (before, the attribute was missing and the older
    ``pip_install`` path always taken)."""
    packaging = getattr(slicer_module, "packaging", None)
    if packaging is None and getattr(slicer_module, "__name__", None) == "slicer":
        import importlib

        try:
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:  # an older Slicer, or its Qt-free core
            packaging = None
    return getattr(packaging, "pip_ensure", None) if packaging is not None else None


def probe_environment(slicer_module=None, requirements: Sequence[str] = PACKAGE_REQUIREMENTS) -> Environment:
    """The :class:`Environment` of this process (``slicer_module``: the ``slicer`` module, imported if ``None``)."""
    if slicer_module is None:
        import slicer as slicer_module  # noqa: F811
    ensure = _pip_ensure(slicer_module)
    params = None
    if ensure is not None:
        try:
            params = frozenset(inspect.signature(ensure).parameters)
        except (TypeError, ValueError):
            params = frozenset()
    util = getattr(slicer_module, "util", None)
    return Environment(
        slicer_version=_slicer_version(slicer_module),
        installed={name: installed_version(name) for name in requirement_names(requirements)},
        pytorch_extension=importlib.util.find_spec("PyTorchUtils") is not None,
        pip_ensure_params=params,
        pip_install=callable(getattr(util, "pip_install", None)),
    )


def slicer_installers(confirm: Callable[[str, str], bool], slicer_module=None) -> Installers:
    """The real :class:`Installers` inside the Slicer application (``confirm``: the widget's Yes/No dialog)."""
    if slicer_module is None:
        import slicer as slicer_module  # noqa: F811

    def install_extension(name: str) -> bool:
        """Install without the manager's own dialogs (our one question was asked) and without its automatic
        restart (``restart=False``; :class:`RestartRequired` tells the user to restart)."""
        manager = slicer_module.app.extensionsManagerModel()
        if manager.isExtensionInstalled(name):
            return True
        interactive = manager.interactive
        manager.interactive = False
        try:
            return bool(manager.installExtensionFromServer(name, False))
        finally:
            manager.interactive = interactive

    def install_torch(specifier: str) -> bool:
        import PyTorchUtils

        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=specifier) is not None

    return Installers(confirm=confirm, install_extension=install_extension, install_torch=install_torch,
                      pip_install=getattr(slicer_module.util, "pip_install", None),
                      pip_ensure=_pip_ensure(slicer_module),
                      probe=lambda: probe_environment(slicer_module))


def ensure_dependencies(confirm: Callable[[str, str], bool], slicer_module=None) -> Plan:
    """Inside Slicer: check, ask once, install; returns the ready plan or raises :class:`DependencyError`."""
    installers = slicer_installers(confirm, slicer_module)
    return apply_plan(plan_dependencies(installers.probe()), installers)
