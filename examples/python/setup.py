"""Only the wheel's tag lives here; everything else is in pyproject.toml.

Built from this directory as is, the package carries no binary: a pure
``py3-none-any`` wheel that finds libdflockd.so.0 at run time (dflockd/_native.py).
``make wheel`` (at the repository root) stages a copy of this directory with the
glibc-2.17 build of ``make dist`` in ``dflockd/_lib/libdflockd.so.0``; the wheel is
then a platform wheel, ``py3-none-manylinux_2_17_x86_64`` (ctypes: any CPython 3,
no Python ABI; the library needs glibc >= 2.17 on x86-64, which ``auditwheel show``
confirms).
"""

from pathlib import Path

from setuptools import Distribution, setup

try:  # setuptools >= 70.1 has its own; older ones use the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel

BUNDLED = Path(__file__).resolve().parent / "dflockd" / "_lib" / "libdflockd.so.0"
PLATFORM = "manylinux_2_17_x86_64"


class MaybeBinaryDistribution(Distribution):
    """Not pure when the library is staged: the files go to platlib, the wheel is not "any"."""

    def has_ext_modules(self):
        return BUNDLED.is_file()


class platform_wheel(bdist_wheel):
    """A platform wheel when the library is staged in the package, else pure."""

    def get_tag(self):
        if BUNDLED.is_file():
            return "py3", "none", PLATFORM
        return super().get_tag()


setup(distclass=MaybeBinaryDistribution, cmdclass={"bdist_wheel": platform_wheel})
