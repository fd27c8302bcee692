"""Reading Relax constants (TVM 0.27 keeps their data in ``GenericConst.value``)."""

from __future__ import annotations

import tvm


def constant_value(expr):
    """numpy value of a Relax constant, else None."""
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None
