"""Shared fixtures. The library is the one DFLOCKD_LIB names (make test-python sets
the repository's build/lib), else the loader's, else build/lib. The reference
client (dflockd-client 2.1.1, for the interop tests and the benchmark) is looked
for in DFLOCKD_PY_REF, default build/python-ref (installed by `make python-ref`)."""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package, without installing it
REPO = HERE.parents[2]
TLS_DIR = REPO / "tests" / "fixtures" / "tls"
REF_DIR = Path(os.environ.get("DFLOCKD_PY_REF", REPO / "build" / "python-ref"))

from dflockd.testing import TestServer  # noqa: E402

_seq = itertools.count()


def load_reference():
    """The reference client module, or None when it is not installed."""
    if not (REF_DIR / "dflockd_client").is_dir():
        return None
    if str(REF_DIR) not in sys.path:
        sys.path.append(str(REF_DIR))
    import dflockd_client

    return dflockd_client


def missing(what: str) -> None:
    """Skip loudly; under CI=true a missing prerequisite fails instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: .ci/run must install it)")
    pytest.skip(what)


@pytest.fixture
def ref():
    mod = load_reference()
    if mod is None:
        missing(f"the reference client is not installed in {REF_DIR} (run `make python-ref`)")
    return mod


@pytest.fixture
def server():
    with TestServer() as srv:
        yield srv


@pytest.fixture
def key(request):
    return f"py-{request.node.name[:40]}-{time.time_ns()}-{next(_seq)}".replace("[", "-").replace("]", "")


def eventually(pred, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
