"""Reading arrays keyed by name from an ``.npz`` file (``run --input``, ``--calibration``)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import SlimError, first_line


def load_npz(path: str, flag: str) -> dict:
    """``{name: array}`` of the ``.npz`` file at ``path``. Refuses, naming ``flag`` (the option
    that gave the path): a missing file, a single ``.npy`` array (no names to match inputs by),
    and anything numpy cannot read as an ``.npz`` without unpickling."""
    if not os.path.isfile(path):
        raise SlimError(f"{flag} {path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError, …
        raise SlimError(f"{flag} {path}: not a readable .npz file ({first_line(err)})") from None
    if isinstance(loaded, np.ndarray):
        raise SlimError(f"{flag} {path}: a single .npy array; give an .npz keyed by input names (numpy.savez(path, NAME=array))")
    try:
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except Exception as err:  # noqa: BLE001 - a damaged member
        raise SlimError(f"{flag} {path}: not a readable .npz file ({first_line(err)})") from None
