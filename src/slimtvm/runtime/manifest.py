"""The artifact manifest (``model.json`` beside ``model.so``): what the library is and how to call it.

Runtime-safe: needs only the standard library (no TVM, no onnx), so it works on a target board.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

from ..errors import SlimError

MANIFEST_FORMAT = "slimtvm-artifact/1"
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}


def manifest_path_for(library_path: str) -> str:
    """``model.so`` → ``model.json``."""
    root, _ = os.path.splitext(library_path)
    return root + ".json"


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def elf_architecture(path: str) -> str:
    """The CPU architecture an ELF shared library was built for (``x86_64``, ``aarch64``, ...).

    Refuses (``SlimError``) a file that is not a 64-bit little-endian ELF file.
    """
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise SlimError(f"{path} is not a shared library (no ELF header)")
    if header[4] != 2 or header[5] != 1:
        raise SlimError(f"{path} is not a 64-bit little-endian ELF library")
    machine = struct.unpack_from("<H", header, 18)[0]
    return ELF_MACHINES.get(machine, f"elf-machine-{machine}")


def read_manifest(library_path: str) -> dict:
    """Read and sanity-check the manifest that belongs to ``library_path``.

    Refuses a missing or unparseable manifest, one of another format, and one whose inputs or
    outputs are not listed with name, shape and dtype.
    """
    path = manifest_path_for(library_path)
    if not os.path.exists(path):
        raise SlimError(f"manifest {path} not found: a slimtvm artifact is a .so with its .json beside it")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise SlimError(f"manifest {path} is unreadable: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SlimError(f"{path} is not a slimtvm manifest (format {MANIFEST_FORMAT!r} expected)")
    for key in ("inputs", "outputs"):
        entries = manifest.get(key)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and {"name", "shape", "dtype"} <= set(e) for e in entries):
            raise SlimError(f"manifest {path} is damaged: {key!r} must list each tensor's name, shape and dtype")
    return manifest


def verify_library(library_path: str, manifest: dict, host_arch: str) -> None:
    """Check that the library is the one the manifest describes and that this machine can run it.

    Refuses a hash mismatch (library replaced or corrupted), a library whose ELF architecture is
    not the manifest's, and a library for another architecture than ``host_arch``.
    """
    actual = sha256_of_file(library_path)
    expected = manifest.get("library", {}).get("sha256")
    if actual != expected:
        raise SlimError(
            f"{library_path} does not match its manifest: sha256 is {actual[:16]}…, manifest says {str(expected)[:16]}… (rebuild it or restore the original)"
        )
    arch = elf_architecture(library_path)
    declared = manifest.get("target", {}).get("arch")
    if arch != declared:
        raise SlimError(f"{library_path} is built for {arch} but its manifest says {declared}")
    if arch != host_arch:
        raise SlimError(f"{library_path} is built for {arch}; this machine is {host_arch} (run it on a {arch} device, or over RPC)")
