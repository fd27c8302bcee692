"""Drop known-spurious lines that TVM's C++ code logs to the process's standard error."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def without_native_lines(*fragments: str):
    """Run the block with file descriptor 2 sent to a temporary file, then write every logged
    line back to standard error except those containing one of ``fragments``.

    For messages TVM logs where they do not apply (FoldConstant legalizing every ``take`` only to
    find its data is not constant). Python's own ``sys.stderr`` is flushed first so the order of
    earlier output is kept; a block that raises still gets its lines written back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True) if not any(f in line for f in fragments)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
