"""SemiSupSegLib.dependencies: what is missing, what would be installed and how, with the Slicer calls injected.

The decisions are pure functions of an ``Environment``; ``apply_plan`` is driven with recording fakes of Slicer's
installers (the real ones need the application). ``probe_environment`` runs for real on this Python.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from SemiSupSegLib import dependencies as deps
from SemiSupSegLib.dependencies import (MIN_SLICER, DependencyError, Environment, Installers, RestartRequired,
                                        apply_plan, choose_installer, parse_slicer_version, plan_dependencies,
                                        probe_environment, slicer_version_problem)

REPO = Path(__file__).resolve().parents[2]
ENSURE_PARAMS = frozenset({"requirements", "constraints", "skip_packages", "prompt_install", "prompt_restart",
                           "requester", "skip_in_testing", "show_progress"})

GOOD = {"torch": "2.5.1", "numpy": "1.26.4", "scipy": "1.13.1", "simpleitk": "2.4.0", "h5py": "3.11.0",
        "tqdm": "4.66.4", "pyyaml": "6.0.1", "vtk": "9.3.0"}


def env(slicer=(5, 8), ext=True, ensure=None, pip_install=True, **versions):
    installed = dict(GOOD)
    installed.update({k.lower(): v for k, v in versions.items()})
    return Environment(slicer_version=slicer, installed=installed, pytorch_extension=ext,
                       pip_ensure_params=ensure, pip_install=pip_install)


def test_requirements_list_is_the_package_metadata():
    """The list kept in dependencies.py is exactly pyproject's [project].dependencies (the extension installs the
    package as files, without pip metadata, so the module cannot read them at run time)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert list(deps.PACKAGE_REQUIREMENTS) == project["dependencies"]


def test_all_present_means_ready_and_pins_slicer_packages():
    plan = plan_dependencies(env())
    assert plan.ready and plan.pip == [] and plan.torch is None and plan.installer is None
    assert plan.confirmation_text() == ""
    assert plan.constraints == ["numpy==1.26.4", "simpleitk==2.4.0", "vtk==9.3.0"]


def test_missing_and_too_old_packages_are_listed_in_package_order():
    plan = plan_dependencies(env(h5py=None, tqdm="4.50.0", pyyaml=None))
    assert plan.pip == ["h5py>=3.0", "tqdm>=4.60", "PyYAML>=5.4"]
    assert not plan.ready and plan.problems == [] and plan.installer == "pip_install"
    # scipy only where Slicer lacks it
    assert plan_dependencies(env(scipy=None)).pip == ["scipy>=1.7"]


def test_slicer_owned_packages_are_never_installed():
    plan = plan_dependencies(env(numpy="1.19.0", simpleitk=None))
    assert plan.pip == []
    assert len(plan.problems) == 2
    assert "numpy>=1.21" in plan.problems[0] and "version 1.19.0" in plan.problems[0]
    assert "SimpleITK" in plan.problems[1] and "missing" in plan.problems[1]
    with pytest.raises(DependencyError, match="cannot be replaced"):
        apply_plan(plan, Recorder().installers())


def test_torch_goes_through_the_pytorch_extension():
    plan = plan_dependencies(env(torch=None))
    assert plan.torch == ">=2.1" and plan.pip == [] and not plan.need_pytorch_extension
    assert plan_dependencies(env(torch="2.0.1")).torch == ">=2.1"
    no_ext = plan_dependencies(env(torch=None, ext=False))
    assert no_ext.need_pytorch_extension and no_ext.torch is None
    assert "PyTorch extension" in no_ext.confirmation_text()
    # the extension is enough once torch is there (it is what installed it)
    assert plan_dependencies(env(ext=False)).ready


def test_slicer_version_checks():
    assert parse_slicer_version("5.8.1") == (5, 8)
    assert parse_slicer_version("5.11.0-2026-03-01") == (5, 11)
    assert parse_slicer_version((5, 6)) == (5, 6)
    assert parse_slicer_version("not a version") is None
    assert slicer_version_problem(None) is None
    assert slicer_version_problem(MIN_SLICER) is None
    old = slicer_version_problem((5, 4))
    assert old is not None and "5.6 or newer" in old and "5.4" in old
    plan = plan_dependencies(env(slicer=(5, 2)))
    assert plan.problems and not plan.ready


def test_installer_choice_follows_the_api_of_the_running_slicer():
    assert choose_installer(ENSURE_PARAMS, True) == "pip_ensure"
    # an early pip_ensure without a way to skip its own prompt: we ask once ourselves, so use pip_install
    assert choose_installer(frozenset({"requirements", "prompt", "requester"}), True) == "pip_install"
    assert choose_installer(None, True) == "pip_install"
    assert choose_installer(None, False) is None
    plan = plan_dependencies(env(h5py=None, pip_install=False))
    assert plan.installer is None and "PythonSlicer -m pip" in plan.problems[0]


def test_markers_that_do_not_apply_are_skipped():
    reqs = ["h5py>=3.0", "pywin32>=300; sys_platform == 'win32'" if sys.platform != "win32"
            else "pyobjc>=9; sys_platform == 'darwin'"]
    plan = plan_dependencies(env(h5py=None), requirements=reqs)
    assert plan.pip == ["h5py>=3.0"]


def test_one_confirmation_lists_everything():
    plan = plan_dependencies(env(torch=None, h5py=None, pyyaml="5.1"))
    text = plan.confirmation_text()
    for item in ("torch>=2.1", "h5py>=3.0", "PyYAML>=5.4"):
        assert text.count(item) == 1
    assert "numpy, simpleitk, vtk stay as they are" in text


# ----------------------------------------------------------------------------------------------------------------------
# apply_plan with recording fakes
# ----------------------------------------------------------------------------------------------------------------------

class Recorder:
    """Fake Slicer installers that record their calls; ``after`` is the environment the re-probe returns."""

    def __init__(self, answer=True, after=None, pip_error=None, torch_ok=True, ext_ok=True):
        self.calls = []
        self.answer = answer
        self.after = after or env()
        self.pip_error = pip_error
        self.torch_ok = torch_ok
        self.ext_ok = ext_ok
        self.constraints_text = None

    def installers(self, with_ensure=False):
        def confirm(title, text):
            self.calls.append(("confirm", text))
            return self.answer

        def pip_install(args):
            self.calls.append(("pip_install", args))
            if "-c" in args:
                self.constraints_text = Path(args[args.index("-c") + 1]).read_text()
            if self.pip_error:
                raise self.pip_error

        def pip_ensure(requirements, **kwargs):
            self.calls.append(("pip_ensure", [str(r) for r in requirements], kwargs))
            if "constraints" in kwargs:
                self.constraints_text = Path(kwargs["constraints"]).read_text()
            if self.pip_error:
                raise self.pip_error

        return Installers(confirm=confirm,
                          install_extension=lambda name: self.calls.append(("extension", name)) or self.ext_ok,
                          install_torch=lambda spec: self.calls.append(("torch", spec)) or self.torch_ok,
                          pip_install=pip_install, pip_ensure=pip_ensure if with_ensure else None,
                          probe=lambda: self.after)


def test_apply_installs_after_one_confirmation_with_slicer_packages_pinned():
    plan = plan_dependencies(env(h5py=None, tqdm=None, torch=None))
    rec = Recorder()
    after = apply_plan(plan, rec.installers())
    assert after.ready
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["confirm", "pip_install", "torch"]
    assert rec.calls[1][1][:3] == ["h5py>=3.0", "tqdm>=4.60", "-c"] and len(rec.calls[1][1]) == 4
    assert rec.calls[2][1] == ">=2.1"
    assert rec.constraints_text.split() == ["numpy==1.26.4", "simpleitk==2.4.0", "vtk==9.3.0"]
    constraints_file = Path(rec.calls[1][1][3])
    assert not constraints_file.exists()  # removed after the install


def test_pip_install_gets_a_list_so_a_windows_path_with_spaces_survives():
    """Slicer 5.6-5.10 ``shlex.split`` a string argument: a Windows temp path (backslashes, a space in the user
    name) would lose its backslashes and break in two. A list reaches pip item by item."""
    import shlex

    plan = plan_dependencies(env(h5py=None))
    path = r"C:\Users\Ann Lee\AppData\Local\Temp\semisupseg-constraints-x.txt"
    args = deps.pip_install_arguments(plan, path)
    assert args == ["h5py>=3.0", "-c", path]
    assert shlex.split(" ".join(args))[-1] != path  # what a string would have become
    assert deps.pip_install_arguments(plan, None) == ["h5py>=3.0"]


def test_the_pytorch_extension_installs_without_the_managers_dialogs_or_restart():
    """Our one question was asked: the Extensions Manager must neither ask again nor restart Slicer in the middle
    of the click (``installExtensionFromServer(name, restart=False)`` while not interactive); its interactive
    setting is restored, also when the install raises; an installed extension is not installed again."""
    class Manager:
        def __init__(self, installed=False, fail=False):
            self.interactive, self.installed, self.fail, self.calls = True, installed, fail, []

        def isExtensionInstalled(self, name):
            return self.installed

        def installExtensionFromServer(self, name, restart=True, update=False):
            self.calls.append((name, restart, self.interactive))
            if self.fail:
                raise RuntimeError("server unreachable")
            return True

    for manager in (Manager(), Manager(installed=True), Manager(fail=True)):
        fake = SimpleNamespace(app=SimpleNamespace(extensionsManagerModel=lambda m=manager: m),
                               util=SimpleNamespace(pip_install=lambda args: None))
        install = deps.slicer_installers(lambda title, text: True, fake).install_extension
        if manager.fail:
            with pytest.raises(RuntimeError):
                install("PyTorch")
        else:
            assert install("PyTorch") is True
        assert manager.calls == ([] if manager.installed else [("PyTorch", False, False)])
        assert manager.interactive is True


def test_apply_uses_pip_ensure_where_slicer_has_it():
    plan = plan_dependencies(env(h5py=None, ensure=ENSURE_PARAMS))
    assert plan.installer == "pip_ensure"
    rec = Recorder()
    apply_plan(plan, rec.installers(with_ensure=True))
    (_, reqs, kwargs), = [c for c in rec.calls if c[0] == "pip_ensure"]
    assert reqs == ["h5py>=3.0"]
    assert kwargs["requester"] == "SemiSupSeg" and kwargs["prompt_install"] is False
    assert "numpy==1.26.4" in rec.constraints_text
    assert [c[0] for c in rec.calls].count("confirm") == 1


def test_pip_ensure_is_found_in_slicers_packaging_submodule(monkeypatch):
    """``slicer.packaging`` is a submodule ``import slicer`` does not import: looked up as an attribute it was
    missing, so Slicer's ``pip_ensure`` was never used. It is imported now (and absent where Slicer lacks it)."""
    import sys
    import types

    from SemiSupSegLib.dependencies import _pip_ensure

    def pip_ensure(*args, **kwargs):
        return None

    fake_slicer = types.ModuleType("slicer")
    monkeypatch.setitem(sys.modules, "slicer.packaging", types.SimpleNamespace(pip_ensure=pip_ensure))
    assert _pip_ensure(fake_slicer) is pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # an older Slicer: importing it fails
    assert _pip_ensure(fake_slicer) is None
    assert _pip_ensure(types.ModuleType("not_slicer")) is None


def test_declining_installs_nothing():
    plan = plan_dependencies(env(h5py=None, torch=None))
    rec = Recorder(answer=False)
    with pytest.raises(DependencyError, match="installation declined") as info:
        apply_plan(plan, rec.installers())
    assert "h5py>=3.0" in str(info.value) and "torch>=2.1" in str(info.value)
    assert [c[0] for c in rec.calls] == ["confirm"]


def test_a_failed_install_stops_with_its_message():
    error = subprocess.CalledProcessError(1, ["pip", "install"], stderr="ERROR: No matching distribution found for h5py")
    plan = plan_dependencies(env(h5py=None, torch=None))
    rec = Recorder(pip_error=error)
    with pytest.raises(DependencyError, match="No matching distribution found for h5py"):
        apply_plan(plan, rec.installers())
    assert "torch" not in [c[0] for c in rec.calls]  # nothing after the failure


def test_torch_install_failure_and_recheck():
    with pytest.raises(DependencyError, match="installing PyTorch"):
        apply_plan(plan_dependencies(env(torch=None)), Recorder(torch_ok=False).installers())
    # the install "succeeded" but the package is still not there: say so, never continue
    rec = Recorder(after=env(h5py=None))
    with pytest.raises(DependencyError, match="still missing after the installation: h5py>=3.0"):
        apply_plan(plan_dependencies(env(h5py=None)), rec.installers())


def test_missing_extension_installs_the_rest_then_asks_for_a_restart():
    plan = plan_dependencies(env(torch=None, ext=False, h5py=None))
    rec = Recorder()
    with pytest.raises(RestartRequired, match="restart Slicer"):
        apply_plan(plan, rec.installers())
    assert [c[0] for c in rec.calls] == ["confirm", "pip_install", "extension"]
    assert rec.calls[2][1] == "PyTorch"
    with pytest.raises(DependencyError, match="could not be installed"):
        apply_plan(plan, Recorder(ext_ok=False).installers())


def test_ready_plan_asks_nothing():
    rec = Recorder()
    assert apply_plan(plan_dependencies(env()), rec.installers()).ready
    assert rec.calls == []


# ----------------------------------------------------------------------------------------------------------------------
# the real environment
# ----------------------------------------------------------------------------------------------------------------------

def test_probe_reads_this_python():
    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        raise AssertionError("never called by probe")

    fake = SimpleNamespace(app=SimpleNamespace(majorVersion=5, minorVersion=10),
                           util=SimpleNamespace(pip_install=lambda args: None),
                           packaging=SimpleNamespace(pip_ensure=pip_ensure))
    found = probe_environment(fake)
    assert found.slicer_version == (5, 10)
    assert found.installed["numpy"] == np.__version__
    assert found.installed["pyyaml"] == yaml.__version__
    assert found.pip_ensure_params == frozenset(inspect.signature(pip_ensure).parameters)
    assert found.pip_install and not found.pytorch_extension
    assert plan_dependencies(found).ready  # this test environment has everything
    assert plan_dependencies(found).installer is None


def test_probe_on_slicer_core():
    import slicer

    found = probe_environment(slicer)  # the Qt-free core: no application, no slicer.packaging
    assert found.slicer_version is None
    assert found.pip_ensure_params is None
    assert deps.installed_version("no-such-distribution-semisupseg") is None
