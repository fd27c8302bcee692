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
    tmp = staging_path(destination)
    try:
        yield tmp
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def staging_path(destination: str) -> str:
    """A new empty file beside ``destination`` (same folder, so a rename replaces it atomically),
    with the permissions a new file gets; the caller renames or removes it."""
    folder = os.path.dirname(os.path.abspath(destination)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(destination) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    return tmp


def write_text_atomic(destination: str, text: str) -> None:
    """Write ``text`` to ``destination`` atomically (fsync'ed before the rename)."""
    with atomic_path(destination) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def replace_together(staged: dict) -> None:
    """Move staged files onto their destinations (``{destination: staged path}``, same folder)
    so that either all of them are replaced or none is.

    Each rename is atomic; if one fails, the destinations already replaced get their previous
    files back (kept as hard links until the end) and the error is raised. Staged files are
    removed either way.
    """
    backups, done = {}, []
    try:
        for destination in staged:
            if os.path.exists(destination):
                backup = _free_name(destination, ".previous")
                os.link(destination, backup)
                backups[destination] = backup
        for destination, source in staged.items():
            os.replace(source, destination)
            done.append(destination)
    except BaseException:
        for destination in done:
            if destination in backups:
                os.replace(backups.pop(destination), destination)
            else:
                with contextlib.suppress(OSError):
                    os.remove(destination)
        raise
    finally:
        for path in list(backups.values()) + [source for source in staged.values()]:
            with contextlib.suppress(OSError):
                os.remove(path)


def _free_name(destination: str, suffix: str) -> str:
    folder, name = os.path.split(os.path.abspath(destination))
    fd, path = tempfile.mkstemp(prefix="." + name + ".", suffix=suffix, dir=folder)
    os.close(fd)
    os.remove(path)  # os.link needs a free name; mkstemp only reserved it
    return path


def check_writable_folder(path: str, what: str) -> None:
    """Refuse (``SlimError``) when ``path``'s folder is missing or not writable, before any work."""
    from .errors import SlimError

    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise SlimError(f"{what} folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SlimError(f"{what} folder {folder} is not writable")
