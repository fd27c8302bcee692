"""ONNX ``Gather`` with constant indices (a ViT's class token, an attention's q, k, v): TOPI's
``take`` in ``clip`` mode.

Relax imports every Gather as ``take`` in ``fast`` mode (no bounds checks), for which TOPI logs
"Fast mode segfaults when there are out-of-bounds indices" at every legalization: nine lines of
noise in ``compile``'s output for a ViT. Constant indices are checked here instead, once: all
within the axis, ``clip`` mode computes exactly what ``fast`` would (its clamp never moves an
index) without the message. Indices that are not constants, or constants out of range, keep
TVM's legalization.
"""

from __future__ import annotations

import numpy as np
from tvm import topi

from ..passes.constants import constant_value
from .fast_math import default_legalization


def legalize_take(bb, call):
    """``take`` of constant in-range indices in ``clip`` mode; TVM's legalization otherwise."""
    data, indices = call.args
    index_values = constant_value(indices)
    shape = getattr(data.ty, "shape", None)
    axis = int(call.attrs.axis) if call.attrs.axis is not None else None
    if index_values is not None and shape is not None and axis is not None:
        try:
            extent = int(shape[axis])
        except TypeError:  # a symbolic axis
            extent = None
        if extent is not None and np.size(index_values) and ((index_values >= 0) & (index_values < extent)).all():
            return bb.call_te(topi.take, data, indices, axis, mode="clip")
    return default_legalization("relax.take", bb, call)
