"""TE placeholders for the tensors a Relax call passes to a kernel the lowering builds itself."""

from __future__ import annotations

from tvm import te, tirx


def te_placeholder(tensor_type, name: str):
    """A TE placeholder of a Relax tensor's static shape and element type, in int64 as Relax's
    shapes are (FuseTIR matches buffers to tensors by type)."""
    return te.placeholder([tirx.IntImm("int64", int(d)) for d in tensor_type.shape], str(tensor_type.dtype), name)
