"""Atomic file writes: write beside the destination, then rename, so no reader ever sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(destination: str):
    """Yield a temporary path in ``destination``'s folder; on success rename it onto ``destination``.

    On any exception the temporary file is removed and ``destination`` is left untouched.
    """
    folder = os.path.dirname(os.path.abspath(destination)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(destination) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        yield tmp
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(destination: str, text: str) -> None:
    """Write ``text`` to ``destination`` atomically (fsync'ed before the rename)."""
    with atomic_path(destination) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
