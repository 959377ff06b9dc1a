"""Only the wheel's contents and tag live here; everything else is in pyproject.toml.

Three ways this package is built:

* ``make wheel`` (at the repository root) stages a copy of this directory with the
  glibc-2.17 build of ``make dist`` in ``dflockd/_lib/libdflockd.so.0``: a platform
  wheel, ``py3-none-manylinux_2_17_x86_64`` (ctypes: any CPython 3, no Python ABI;
  the library needs glibc >= 2.17 on x86-64, which ``auditwheel show`` confirms).
* From the sdist ``make wheel`` also writes, which carries the published crate in
  ``libdflockd/``: where ``cargo`` is on PATH (and ``DFLOCKD_BUILD_LIB`` is not ``0``)
  the library is built from that source (``cargo build --release --lib``) into
  ``dflockd/_lib/``, giving a wheel for this machine (``py3-none-<platform>``);
  without cargo, the pure package below.
* Straight from this directory (``pip install ./examples/python``), or from the sdist
  without cargo: the pure package, ``py3-none-any``, which finds libdflockd.so.0 at
  run time (dflockd/_native.py: DFLOCKD_LIB, the system loader).
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 has its own; older ones use the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
SONAME = "libdflockd.so.0"
BUNDLED = HERE / "dflockd" / "_lib" / SONAME
PLATFORM = "manylinux_2_17_x86_64"
CRATE = HERE / "libdflockd" / "Cargo.toml"  # only in the sdist
CARGO = shutil.which(os.environ.get("CARGO", "cargo"))
FROM_SOURCE = (
    not BUNDLED.is_file() and CRATE.is_file() and CARGO is not None and os.environ.get("DFLOCKD_BUILD_LIB") != "0"
)


class MaybeBinaryDistribution(Distribution):
    """Not pure when the wheel carries the library: files go to platlib, the tag is not "any"."""

    def has_ext_modules(self):
        return BUNDLED.is_file() or FROM_SOURCE


class build_py_and_lib(build_py):
    """build_py, then (sdist with cargo available) the library from the crate's source."""

    def run(self):
        super().run()
        if not FROM_SOURCE:
            return
        target = Path(os.environ.get("CARGO_TARGET_DIR") or HERE / "build" / "cargo")
        cmd = [CARGO, "build", "--release", "--lib", "--manifest-path", str(CRATE), "--target-dir", str(target)]
        print("dflockd: building libdflockd from source:", " ".join(cmd))
        subprocess.run(cmd, check=True)
        dest = Path(self.build_lib) / "dflockd" / "_lib" / SONAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target / "release" / "libdflockd.so", dest)
        dest.chmod(0o755)


class platform_wheel(bdist_wheel):
    """The tags described above."""

    def get_tag(self):
        if BUNDLED.is_file():
            return "py3", "none", PLATFORM
        if FROM_SOURCE:
            return "py3", "none", super().get_tag()[2]
        return super().get_tag()


setup(
    distclass=MaybeBinaryDistribution,
    cmdclass={"build_py": build_py_and_lib, "bdist_wheel": platform_wheel},
)
