"""The wheel carries no binary and finds libdflockd.so.0 at run time: DFLOCKD_LIB,
then the system loader, then (in the repository) build/lib."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import HERE, REPO, missing

PKG = HERE.parent
# the library under test (make test-python sets DFLOCKD_LIB to build/lib/libdflockd.so.0)
LIB_PATH = Path(os.environ.get("DFLOCKD_LIB") or REPO / "build" / "lib" / "libdflockd.so.0")
BUILD_LIB = LIB_PATH.parent
PROBE = (
    "import dflockd, dflockd._native as n\n"
    "from dflockd.testing import TestServer\n"
    "with TestServer() as s, dflockd.SyncDistributedLock('k', servers=s.servers) as l:\n"
    "    print(dflockd.__file__, n.LOADED_FROM, l.fence > 0)\n"
)


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k not in ("DFLOCKD_LIB", "LD_LIBRARY_PATH", "PYTHONPATH")}
    env.update({k: str(v) for k, v in changes.items()})
    return env


def _run(code, cwd, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("pip", "setuptools", "wheel")):
        missing("building the wheel needs pip and setuptools (Debian python3-pip)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


def test_wheel_is_pure_python(wheel):
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "dflockd/_native.py" in names and "dflockd/__init__.py" in names
    assert not [n for n in names if n.endswith((".so", ".dll", ".dylib", ".a")) or ".so." in n], names
    assert not [n for n in names if n.startswith("tests/")]


def test_installed_wheel_loads_the_library(wheel, tmp_path):
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # 1. DFLOCKD_LIB
    r = _run(PROBE, tmp_path, PYTHONPATH=site, DFLOCKD_LIB=LIB_PATH)
    assert r.returncode == 0, r.stderr
    where, loaded, ok = r.stdout.split()
    assert where.startswith(str(site)) and loaded == str(LIB_PATH) and ok == "True"
    # 2. the system loader (here LD_LIBRARY_PATH stands in for an installed library)
    r = _run(PROBE, tmp_path, PYTHONPATH=site, LD_LIBRARY_PATH=BUILD_LIB)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == "libdflockd.so.0"
    # a wrong DFLOCKD_LIB is an ImportError that says what to do
    r = _run("import dflockd", tmp_path, PYTHONPATH=site, DFLOCKD_LIB=tmp_path / "nope.so")
    assert r.returncode != 0 and "ImportError" in r.stderr and "DFLOCKD_LIB" in r.stderr


def test_in_repository_fallback_to_build_lib():
    r = _run(PROBE, PKG)  # no DFLOCKD_LIB, no loader path: the repository's build/lib
    if r.returncode != 0 or r.stdout.split()[1] == "libdflockd.so.0":
        pytest.skip(f"a system libdflockd.so.0 is installed, or: {r.stderr[-300:]}")
    assert r.stdout.split()[1] == str(REPO / "build" / "lib" / "libdflockd.so.0")


def test_bundled_library_comes_first(tmp_path):
    """The platform wheel (make wheel) carries dflockd/_lib/libdflockd.so.0: it loads that
    one, before DFLOCKD_LIB and the system loader (make wheel-check tests the real wheel)."""
    pkg = tmp_path / "dflockd"
    shutil.copytree(PKG / "dflockd", pkg, ignore=shutil.ignore_patterns("__pycache__", "_lib"))
    (pkg / "_lib").mkdir()
    shutil.copy(LIB_PATH, pkg / "_lib" / "libdflockd.so.0")
    r = _run(PROBE, tmp_path, PYTHONPATH=tmp_path, DFLOCKD_LIB=tmp_path / "nope.so", LD_LIBRARY_PATH=BUILD_LIB)
    assert r.returncode == 0, r.stderr
    where, loaded, ok = r.stdout.split()
    assert where == str(pkg / "__init__.py") and loaded == str(pkg / "_lib" / "libdflockd.so.0") and ok == "True"
