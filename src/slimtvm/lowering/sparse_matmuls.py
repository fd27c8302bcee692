"""Pruned token matmuls (a transformer's Linear layers) → the direct sparse kernel.

``x[..., S, K] · W[K, N]`` with a constant, mostly zero ``W`` is a 1×1 conv of ``Wᵀ`` over the
``S`` tokens taken as pixels: ``xᵀ`` is an NCHW image ``[B, K, 1, S]`` (the tokens of each of
the ``B`` leading slices are its pixels), and the sparse conv kernel (schedules/sparse_conv.py)
multiplies each nonzero weight with a whole vector of tokens, which a tokens-major product
cannot (its vectors run along the output features, and unstructured zeros leave few whole
vectors of them). So the product becomes a transpose into that image, the sparse kernel, and a
transpose back; the choice between it and the dense GEMM kernel is the sparse lowering's own
per-layer choice for that 1×1 conv (lowering/sparse_layers.py: its table, or both kernels timed
near its thresholds), and a matmul it keeps dense stays a matmul.

Between two such products (a transformer MLP's ``fc2(GELU(fc1(x) + b))``) the first one's
transpose back is not needed: when the second product's input is computed by element-wise ops
from the first one's tokens-major result (through its transpose), with constants that are
scalars or one value per feature, those ops are emitted again on the features-major result
(per-feature constants as ``[N, 1]``), and the second product reads that directly.

Refuses (returns None for) anything but a float32 matmul of an activation of at least two axes
by a constant 2-D weight, with static shapes and at least :data:`MIN_TOKENS` rows (a classifier
at batch 1 is one row: the sparse kernel's vectors run over rows, and the dense kernel's split-K
form streams its weights).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import op_name
from ..passes.elementwise_ops import ELEMENTWISE_OPS
from ..passes.static_shapes import static_shape

MIN_TOKENS = 16  # rows (tokens) of the product: the sparse kernel's vectors of pixels
ELEMENTWISE = ELEMENTWISE_OPS | {"relax.erf", "relax.exp", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu", "relax.sqrt", "relax.negative"}
MAX_REBUILT_OPS = 32


def _swaps_last_axes(call) -> bool:
    if op_name(call) != "relax.permute_dims" or call.attrs.axes is None:
        return False
    axes = [int(a) for a in call.attrs.axes]
    rank = len(axes)
    return rank >= 2 and axes == list(range(rank - 2)) + [rank - 1, rank - 2]


class _FeaturesMajor:
    """Rebuilds a tokens-major value ``[..., S, N]`` as features-major ``[..., N, S]`` without a
    transpose (module docstring), or says it cannot."""

    def __init__(self, builder, lookup, features: int):
        self.builder, self.lookup, self.features = builder, lookup, features
        self.rebuilt: dict = {}
        self.ops = 0

    def possible(self, expr) -> bool:
        self.ops += 1
        if self.ops > MAX_REBUILT_OPS or not isinstance(expr, relax.Var):
            return False
        bound = self.lookup(expr)
        if bound is None:
            return False
        if _swaps_last_axes(bound):
            return True
        if op_name(bound) not in ELEMENTWISE:
            return False
        for arg in bound.args:
            value = constant_value(arg) if not isinstance(arg, relax.Var) else None
            if value is not None:
                if value.size != 1 and not (value.shape[-1:] == (self.features,) and value.size == self.features):
                    return False
            elif not self.possible(arg):
                return False
        return True

    def build(self, expr):
        if expr in self.rebuilt:
            return self.rebuilt[expr]
        bound = self.lookup(expr)
        if _swaps_last_axes(bound):
            result = bound.args[0]
        else:
            args = []
            for arg in bound.args:
                value = constant_value(arg) if not isinstance(arg, relax.Var) else None
                if value is None:
                    args.append(self.build(arg))
                elif value.size == 1:
                    args.append(arg)
                else:
                    args.append(relax.const(value.reshape(self.features, 1)))
            result = self.builder.emit(relax.Call(bound.op, args, bound.attrs, bound.ty_args))
        self.rebuilt[expr] = result
        return result


def lower_sparse_matmul(builder, call, sparse, lookup=None):
    """``(result, LayerRecord)`` when ``sparse`` (a SparseLayers) runs the matmul ``call`` as the
    sparse kernel; ``(None, note)`` when it keeps it dense, the note saying why; None for a matmul
    this lowering refuses (module docstring) or whose weight has no zeros. ``lookup``: the
    mutator's ``lookup_binding``, to read the input's producers (module docstring)."""
    if op_name(call) != "relax.matmul":
        return None
    weight = constant_value(call.args[1])
    data = call.args[0]
    dims = static_shape(data, "float32")
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or dims is None or len(dims) < 2:
        return None
    *leading, tokens, features = dims
    if tokens < MIN_TOKENS or weight.all():
        return None  # (a weight without zeros: nothing to emit, not even the image below)
    images = math.prod(leading)
    outputs = weight.shape[1]
    axes = list(range(len(dims)))
    rebuild = _FeaturesMajor(builder, lookup, features) if lookup is not None else None
    if rebuild is not None and rebuild.possible(data):
        features_major = rebuild.build(data)
    else:
        features_major = relax.op.permute_dims(data, axes[:-2] + [axes[-1], axes[-2]])
    image = builder.emit(relax.op.reshape(features_major, [images, features, 1, tokens]))
    conv = builder.normalize(relax.op.nn.conv2d(image, relax.const(np.ascontiguousarray(weight.T).reshape(outputs, features, 1, 1))))
    lowered = sparse.lower(builder, conv, layer_op="matmul")
    if lowered is None or lowered[0] is None:
        return lowered  # the image binding above is dead code then, removed after fusion
    kernel, record = lowered
    result = builder.emit(relax.op.reshape(kernel, [*leading, outputs, tokens]))
    record.op = "matmul"
    record.plan = f"{record.plan}; tokens as pixels of a 1×1 conv, transposed in and out"
    return relax.op.permute_dims(result, axes[:-2] + [axes[-1], axes[-2]]), record
