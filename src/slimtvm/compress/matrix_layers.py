"""A float layer seen as a matrix: ``output rows = input rows @ matrixᵀ + bias``.

Every Conv (group 1), Gemm and MatMul with constant 2-D weights is, per output position, a product
with one matrix (outputs × reduction): a conv's kernel reshaped to (O, I·kh·kw) applied to the
patch each output pixel reads; a Gemm's ``alpha · B'`` (transposed); a MatMul's ``Bᵀ``. The
low-rank rewrite factorises that matrix, the error search and the data-aware reconstruction solve
least-squares problems with it. The static shapes (from ONNX shape inference) give each layer's
multiply-accumulate count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..frontend.shape_inference import inferred_shapes
from .weight_layers import attribute, layer_name, weight_layers


@dataclass(eq=False)  # identity: layers key dicts
class MatrixLayer:
    """One layer in matrix form (see module doc)."""

    node: object  # the onnx NodeProto
    weight: object  # its weight initializer
    matrix: np.ndarray  # float32 (outputs, reduction)
    bias: np.ndarray | None  # float32 (outputs,) or None (a Gemm's C that is not a vector counts as None)
    kernel: tuple  # (kh, kw) of a conv, () otherwise
    positions: int  # output positions (batch · pixels, or matrix rows)
    input_positions: int  # input positions (a strided conv reads more pixels than it writes)

    @property
    def name(self) -> str:
        return layer_name(self.node)

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def outputs(self) -> int:
        return self.matrix.shape[0]

    @property
    def inputs(self) -> int:
        """Input channels (conv) or features (Gemm/MatMul)."""
        return self.matrix.shape[1] // max(1, int(np.prod(self.kernel)) if self.kernel else 1)

    @property
    def is_spatial(self) -> bool:
        """A conv with more than one tap (Tucker-2 material); 1×1 convs are matrices."""
        return bool(self.kernel) and int(np.prod(self.kernel)) > 1

    @property
    def macs(self) -> int:
        return self.positions * self.matrix.shape[0] * self.matrix.shape[1]

    def kernel_array(self) -> np.ndarray:
        """A conv's kernel (O, I, kh, kw)."""
        return self.matrix.reshape(self.outputs, self.inputs, *self.kernel)


def _shapes(model: onnx.ModelProto) -> dict:
    inferred = inferred_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def matrix_layers(model: onnx.ModelProto) -> list:
    """The :class:`MatrixLayer` of every Conv (group 1, 2-D), Gemm and MatMul (2-D constant
    weights) of a static-shape model, graph order; other layers (grouped convs, 1-D/3-D convs,
    batched weights, unknown shapes) are not listed."""
    shapes = _shapes(model)
    initializers = {init.name: init for init in model.graph.initializer}
    layers = []
    for node, weight, _axis in weight_layers(model):
        values = numpy_helper.to_array(weight).astype(np.float32)
        in_shape, out_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
        if in_shape is None or out_shape is None:
            continue
        bias = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = None if bias is None else numpy_helper.to_array(bias).astype(np.float32)
        if node.op_type == "Conv":
            if values.ndim != 4 or attribute(node, "group", 1) != 1:
                continue
            layers.append(
                MatrixLayer(
                    node, weight, values.reshape(values.shape[0], -1), bias, tuple(values.shape[2:]),
                    int(out_shape[0] * out_shape[2] * out_shape[3]), int(in_shape[0] * in_shape[2] * in_shape[3]),
                )
            )  # fmt: skip
        elif node.op_type == "Gemm":
            alpha, beta = attribute(node, "alpha", 1.0), attribute(node, "beta", 1.0)
            matrix = values if attribute(node, "transB", 0) else values.T
            if bias is not None:
                bias = beta * bias if bias.size == matrix.shape[0] and bias.ndim <= 2 else None
            rows = int(out_shape[0])
            layers.append(MatrixLayer(node, weight, (alpha * matrix).astype(np.float32), None if bias is None else bias.reshape(-1), (), rows, rows))
        elif values.ndim == 2:  # MatMul with a constant right-hand side
            rows = int(np.prod(out_shape[:-1]))
            layers.append(MatrixLayer(node, weight, np.ascontiguousarray(values.T), None, (), rows, rows))
    return layers


def linear_macs(model: onnx.ModelProto, nonzero: bool = False) -> int:
    """Multiply-accumulates of every Conv (grouped ones included), Gemm and MatMul with constant
    weights of a static-shape model; ``nonzero``: only those with a nonzero weight (what a sparse
    kernel computes)."""
    shapes = _shapes(model)
    total = 0
    for node, weight, _axis in weight_layers(model):
        out_shape = shapes.get(node.output[0])
        if out_shape is None:
            continue
        weights = int(np.count_nonzero(numpy_helper.to_array(weight))) if nonzero else int(np.prod(weight.dims))
        outputs = weight.dims[0] if node.op_type == "Conv" else int(out_shape[-1])
        total += int(np.prod(out_shape)) * weights // int(outputs)
    return total
