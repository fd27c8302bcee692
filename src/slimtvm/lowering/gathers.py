"""ONNX ``Gather`` (Relax ``take``): bounds decided once, and no out-of-range read.

Relax imports every Gather as ``take`` in ``fast`` mode (no bounds checks), for which TOPI logs
"Fast mode segfaults when there are out-of-bounds indices" at every legalization — nine lines of
noise in ``compile``'s output for a ViT — and which reads outside the tensor for a bad index.

- Constant indices (a ViT's class token, an attention's q, k, v) are checked here, once: all
  within the axis, ``clip`` mode computes exactly what ``fast`` would (its clamp never moves an
  index), without the message.
- Indices from an input (BERT's token ids into its word embeddings) on float data take ``nan``
  mode: an index outside the table gives NaN rows, which reach the outputs, where onnxruntime
  refuses the run; never a read outside the table or a row of another token.

Everything else (integer data, constant indices out of range) keeps TVM's legalization.
"""

from __future__ import annotations

import numpy as np
from tvm import topi

from ..passes.constants import constant_value
from .fast_math import default_legalization


def legalize_take(bb, call):
    """``take`` in ``clip`` mode for constant in-range indices, ``nan`` mode for other indices
    into float data, TVM's legalization otherwise (module docstring)."""
    data, indices = call.args
    shape = getattr(data.ty, "shape", None)
    axis = int(call.attrs.axis) if call.attrs.axis is not None else None
    if shape is None or axis is None:
        return default_legalization("relax.take", bb, call)
    index_values = constant_value(indices)
    if index_values is None:
        if str(data.ty.dtype).startswith("float"):
            return bb.call_te(topi.take, data, indices, axis, mode="nan")
        return default_legalization("relax.take", bb, call)
    try:
        extent = int(shape[axis])
    except TypeError:  # a symbolic axis
        return default_legalization("relax.take", bb, call)
    if np.size(index_values) and ((index_values >= 0) & (index_values < extent)).all():
        return bb.call_te(topi.take, data, indices, axis, mode="clip")
    return default_legalization("relax.take", bb, call)
