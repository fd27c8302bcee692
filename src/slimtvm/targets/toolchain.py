"""Cross toolchains: which C++ compiler links a shared library for another architecture."""

from __future__ import annotations

import shutil

from ..errors import SlimError

CROSS_COMPILERS = {"aarch64": "aarch64-linux-gnu-g++", "x86_64": "x86_64-linux-gnu-g++"}
DEBIAN_PACKAGES = {"aarch64": "g++-aarch64-linux-gnu", "x86_64": "g++-x86-64-linux-gnu"}


def cross_compiler_for(arch: str) -> str:
    """The path of the cross C++ compiler that links ``arch`` libraries on this host.

    Refuses (``SlimError``) when it is not installed, naming the Debian package to install.
    """
    name = CROSS_COMPILERS.get(arch)
    if name is None:
        raise SlimError(f"no cross toolchain known for architecture {arch!r}")
    path = shutil.which(name)
    if path is None:
        raise SlimError(
            f"cross compiler {name} not found on PATH: install it (Debian: apt-get install {DEBIAN_PACKAGES[arch]}) or run scripts/setup_arm_emulation.sh"
        )
    return path
