"""Nothing opens a network connection at run time: the CLI and the Slicer library work with the network blocked.

Three layers:

* **in process**: ``socket.socket.connect`` / ``connect_ex``, ``socket.create_connection``, ``getaddrinfo``,
  ``gethostbyname(_ex)`` and ``gethostbyaddr`` are replaced by recorders that raise; the CLI runs in this process
  (``segment`` with the shipped model on a bundled scan, ``info``, ``models``, ``check-data``, a 3-iteration
  ``train``, ``demo --help``) and every ``SemiSupSegLib`` module is imported; no attempt may be recorded;
* **child processes**: the same guard installed at interpreter start by a ``sitecustomize`` module on
  ``PYTHONPATH`` (so it also covers any process those children start), logging attempts to a file;
* **no network at all** (Linux, where an unprivileged network namespace can be made: ``unshare -rn``): the same
  child processes in a namespace whose only interface is a loopback that is down; they must still succeed.

Connections of ``AF_UNIX`` sockets (local inter-process pipes) are let through and counted separately: they are
not network traffic. The guard is proven to work by a control that tries to connect and must be recorded.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from slicer_guard import require_slicer

from semisupseg.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
SCAN = REPO / "Testing" / "data" / "hippocampus_003_image.nii.gz"
SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus"
SLICER_MODULE = REPO / "SemiSupSeg"
SHIPPED_MODEL = "hippocampus"  # semisupseg/models/hippocampus.pt

#: the guard, as installed in child processes (``sitecustomize``); the in-process tests use the same functions
GUARD = textwrap.dedent('''
    """Test guard: every attempt to reach the network is logged to $SEMISUPSEG_NO_NET_LOG and refused."""
    import json as _json, os as _os, socket as _socket, traceback as _tb

    _LOG = _os.environ.get("SEMISUPSEG_NO_NET_LOG")

    def _record(kind, target):
        entry = {"kind": kind, "target": repr(target)[:200], "pid": _os.getpid(),
                 "where": "".join(_tb.format_stack(limit=12)[:-2])[-2000:]}
        if _LOG:
            with open(_LOG, "a") as fh:
                fh.write(_json.dumps(entry) + "\\n")
        return entry

    _connect, _connect_ex = _socket.socket.connect, _socket.socket.connect_ex

    def connect(self, address):
        if self.family == getattr(_socket, "AF_UNIX", None):
            _record("local", address)
            return _connect(self, address)
        _record("connect", address)
        raise OSError(101, "network access blocked by the no-network test")

    def connect_ex(self, address):
        if self.family == getattr(_socket, "AF_UNIX", None):
            _record("local", address)
            return _connect_ex(self, address)
        _record("connect_ex", address)
        return 101

    def _blocked(kind):
        def refuse(*args, **kwargs):
            _record(kind, args)
            raise OSError(101, "network access blocked by the no-network test")
        return refuse

    def install():
        _socket.socket.connect, _socket.socket.connect_ex = connect, connect_ex
        for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            setattr(_socket, name, _blocked(name))

    install()
''')


def _guard_module(tmp: Path) -> Path:
    """A folder holding the guard as ``sitecustomize.py`` (prepend it to ``PYTHONPATH``)."""
    folder = tmp / "guard"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(GUARD)
    return folder


def _read_log(log: Path) -> List[Dict]:
    return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def blocked(monkeypatch, tmp_path):
    """Install the guard in this process (undone after the test); yields the log path."""
    log = tmp_path / "net_attempts.jsonl"
    monkeypatch.setenv("SEMISUPSEG_NO_NET_LOG", str(log))
    namespace: Dict = {}
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, getattr(socket.socket, name))  # restored by monkeypatch
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, getattr(socket, name))
    exec(compile(GUARD, "no_network_guard", "exec"), namespace)  # installs on the real socket module
    yield log


def _cli(argv: List[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(argv)
        except SystemExit as exc:  # --help
            rc = exc.code
    assert rc == 0, f"{argv}: exit {rc}\n{err.getvalue()[-2000:]}"
    return out.getvalue()


def _commands(tmp: Path) -> Dict[str, List[str]]:
    return {
        "segment": ["segment", "--model", SHIPPED_MODEL, "-o", str(tmp / "seg"), "--sdm", "--entropy", str(SCAN)],
        "info": ["info", SHIPPED_MODEL],
        "models": ["models", "--home", str(tmp / "home")],
        "check-data": ["check-data", "--labeled", str(SAMPLE), "--validation", "1"],
        "train": ["train", "--method", "supervised", "--labeled", str(SAMPLE), "--out", str(tmp / "run"),
                  "--iterations", "3", "--patch-size", "32", "32", "32", "--batch-size", "2", "--no-bar",
                  "--seed", "0", "--set", "model.n_filters=4"],
        "demo --help": ["demo", "--help"],
    }


def _slicer_lib_modules() -> List[str]:
    return sorted(f"SemiSupSegLib.{p.stem}" for p in (SLICER_MODULE / "SemiSupSegLib").glob("*.py")
                  if p.stem != "__init__")




def test_the_guard_records_and_refuses(blocked):
    """Control: the guard sees a connection attempt, a name lookup and a urllib request (so an empty log means
    nothing tried)."""
    import urllib.request

    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("example.org", 443)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://192.0.2.1/", timeout=1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError):
        s.connect(("192.0.2.1", 80))
    s.close()
    kinds = [e["kind"] for e in _read_log(blocked)]
    assert kinds.count("create_connection") >= 1 and kinds.count("getaddrinfo") >= 1 and "connect" in kinds
    assert len(kinds) >= 4


def test_cli_in_process_with_sockets_blocked(blocked, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMISUPSEG_HOME", str(tmp_path / "home"))
    outputs = {name: _cli(argv) for name, argv in _commands(tmp_path).items()}
    assert "hippocampus" in outputs["info"] and "hippocampus" in outputs["models"]
    assert sorted(p.name for p in (tmp_path / "seg").iterdir())  # segment wrote its outputs
    assert (tmp_path / "run" / "last.pt").exists() or (tmp_path / "run" / "best.pt").exists()
    attempts = [e for e in _read_log(blocked) if e["kind"] != "local"]
    assert attempts == [], attempts


def test_slicer_library_imports_in_process_with_sockets_blocked(blocked):
    require_slicer()
    import importlib

    imported = [importlib.import_module(m).__name__ for m in _slicer_lib_modules()]
    assert "SemiSupSegLib.segment_logic" in imported and len(imported) >= 10
    attempts = [e for e in _read_log(blocked) if e["kind"] != "local"]
    assert attempts == [], attempts


def _child_env(tmp: Path, log: Path) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(_guard_module(tmp)), str(REPO / "src"), str(SLICER_MODULE)]),
                SEMISUPSEG_NO_NET_LOG=str(log), SEMISUPSEG_HOME=str(tmp / "home"), OMP_NUM_THREADS="1",
                PYTHONNOUSERSITE="1")


def _run_children(tmp: Path, log: Path, prefix: List[str]) -> Dict[str, subprocess.CompletedProcess]:
    """Each command as its own ``python -m semisupseg ...`` (the real entry point), then the library imports."""
    env = _child_env(tmp, log)
    runs = {}
    for name, argv in _commands(tmp).items():
        runs[name] = subprocess.run(prefix + [sys.executable, "-m", "semisupseg", *argv], env=env,
                                    capture_output=True, text=True, timeout=600)
    lib = "; ".join(f"import {m}" for m in _slicer_lib_modules())
    runs["import SemiSupSegLib"] = subprocess.run(prefix + [sys.executable, "-c", lib], env=env,
                                                  capture_output=True, text=True, timeout=300)
    return runs


#: one child running every command through ``semisupseg.cli.main`` and importing the library (one torch import)
ONE_CHILD = textwrap.dedent("""
    import json, sys
    from semisupseg.cli import main
    codes = {}
    for name, argv in json.loads(sys.argv[1]).items():
        try:
            codes[name] = main(argv)
        except SystemExit as exc:
            codes[name] = exc.code
    for module in json.loads(sys.argv[2]):
        __import__(module)
    print(json.dumps(codes))
""")


def _check_children(runs: Dict[str, subprocess.CompletedProcess], log: Path) -> None:
    failed = {k: (r.returncode, r.stderr[-1500:]) for k, r in runs.items() if r.returncode != 0}
    assert not failed, failed
    entries = _read_log(log)
    attempts = [e for e in entries if e["kind"] != "local"]
    assert attempts == [], attempts


def _can_unshare() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _isolation(tmp: Path) -> List[str]:
    """``["unshare", "-rn"]`` (a network namespace with no usable interface) where Linux allows it, else ``[]``
    (the guard alone). The namespace is checked to have no route, and the guard to be active in a child."""
    log = tmp / "control.jsonl"
    control = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('example.org', 80)"],
                             env=_child_env(tmp, log), capture_output=True, text=True, timeout=60)
    assert control.returncode != 0 and [e["kind"] for e in _read_log(log)] == ["getaddrinfo"], control.stderr
    if not _can_unshare():
        return []
    probe = subprocess.run(["unshare", "-rn", sys.executable, "-c",
                            "import socket; socket.create_connection(('192.0.2.1', 80), timeout=2)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), probe.stderr  # no route at all
    return ["unshare", "-rn"]


@pytest.mark.slow
def test_cli_and_library_in_a_guarded_child_without_network(tmp_path):
    """One child process (guard installed by ``sitecustomize``, inside a network namespace where available) runs
    every command and imports every library module: all succeed, no attempt recorded."""
    prefix = _isolation(tmp_path)
    log = tmp_path / "attempts.jsonl"
    run = subprocess.run(prefix + [sys.executable, "-c", ONE_CHILD, json.dumps(_commands(tmp_path)),
                                   json.dumps(_slicer_lib_modules())],
                         env=_child_env(tmp_path, log), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    codes = json.loads(run.stdout.strip().splitlines()[-1])
    assert codes == {name: 0 for name in _commands(tmp_path)}, (codes, run.stderr[-3000:])
    attempts = [e for e in _read_log(log) if e["kind"] != "local"]
    assert attempts == [], attempts


@pytest.mark.slow
def test_each_command_as_its_own_process_without_network(tmp_path):
    """Each command through the real entry point (``python -m semisupseg ...``), each in its own guarded process
    (and network namespace where available)."""
    prefix = _isolation(tmp_path)
    log = tmp_path / "attempts.jsonl"
    _check_children(_run_children(tmp_path, log, prefix), log)


def test_slicer_library_fresh_imports_in_a_guarded_child(tmp_path):
    """The in-process import above may find the modules already imported by other tests; here every module is
    imported for the first time, in a child with the guard installed at start-up."""
    require_slicer()  # skips without slicer-core
    log = tmp_path / "attempts.jsonl"
    lib = "; ".join(f"import {m}" for m in _slicer_lib_modules())
    run = subprocess.run([sys.executable, "-c", lib + "; import sys; print(len([m for m in sys.modules "
                          "if m.startswith('SemiSupSegLib.')]))"], env=_child_env(tmp_path, log),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.strip().splitlines()[-1]) == len(_slicer_lib_modules())
    attempts = [e for e in _read_log(log) if e["kind"] != "local"]
    assert attempts == [], attempts
