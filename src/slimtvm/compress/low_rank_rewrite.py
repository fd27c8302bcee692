"""Rewrite factorised layers into the ONNX graph as chains of plain layers.

* Gemm: ``Gemm(A, rightᵀ; transA) → Gemm(·, leftᵀ, C; beta)`` (alpha is inside the factors).
* MatMul: ``MatMul(A, rightᵀ) → MatMul(·, leftᵀ)``.
* 1×1 Conv: ``Conv(x, right; the layer's strides, pads, dilations) → Conv(·, left, B)``: the first
  conv has no bias, so its zero padding stays zero and the second adds the bias everywhere, as the
  original did.
* k×k Conv, Tucker-2 (U, core, V): ``Conv 1×1(x, Vᵀ) → Conv k×k(·, core; the layer's attributes)
  → Conv 1×1(·, U, B)``; a 1×1 whose factor is the identity (a mode kept whole) is left out. The
  first 1×1 has no bias, so the k×k conv's zero padding is exact.

The chain's last node keeps the layer's name and output; the others are named ``NAME/low_rank_*``.
Weights no node reads any more are dropped from the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .matrix_layers import MatrixLayer


def _node(op: str, inputs: list, output: str, name: str, attributes: list = ()) -> onnx.NodeProto:
    node = helper.make_node(op, inputs, [output], name=name)
    node.attribute.extend(attributes)
    return node


def _chain(layer: MatrixLayer, factors: tuple, add, gemm_needs_c: bool) -> list:
    """The nodes replacing ``layer`` (see module doc); ``add(name, array)`` makes an initializer
    and returns its name; ``gemm_needs_c``: the opset (< 11) requires Gemm's C input."""
    node, name = layer.node, layer.name
    prefix = f"{name}/low_rank"
    bias = list(node.input[2:3])
    if node.op_type == "Gemm":
        left, right = factors
        trans_a = [a for a in node.attribute if a.name == "transA"]
        beta = [a for a in node.attribute if a.name == "beta"]
        first_inputs = [node.input[0], add(f"{prefix}/right", right.T)]
        if gemm_needs_c:
            first_inputs.append(add(f"{prefix}/zero", np.zeros(right.shape[0], np.float32)))
        return [
            _node("Gemm", first_inputs, f"{prefix}/hidden", f"{prefix}/first", trans_a),
            _node("Gemm", [f"{prefix}/hidden", add(f"{prefix}/left", left.T), *bias], node.output[0], name, beta),
        ]
    if node.op_type == "MatMul":
        left, right = factors
        return [
            _node("MatMul", [node.input[0], add(f"{prefix}/right", right.T)], f"{prefix}/hidden", f"{prefix}/first"),
            _node("MatMul", [f"{prefix}/hidden", add(f"{prefix}/left", left.T)], node.output[0], name),
        ]
    one_by_one = [helper.make_attribute("kernel_shape", [1, 1])]
    if not layer.is_spatial:
        left, right = factors
        first = add(f"{prefix}/right", right.reshape(right.shape[0], -1, 1, 1))
        return [
            _node("Conv", [node.input[0], first], f"{prefix}/hidden", f"{prefix}/first", list(node.attribute)),
            _node("Conv", [f"{prefix}/hidden", add(f"{prefix}/left", left[:, :, None, None]), *bias], node.output[0], name, one_by_one),
        ]
    u, core, v = factors
    nodes, source = [], node.input[0]
    if v.shape[1] < v.shape[0]:
        nodes.append(_node("Conv", [source, add(f"{prefix}/in", np.ascontiguousarray(v.T)[:, :, None, None])], f"{prefix}/reduced", f"{prefix}/in", one_by_one))
        source = f"{prefix}/reduced"
    else:
        core = np.einsum("abhw,ib->aihw", core, v)  # identity V: the core reads the input channels
    if u.shape[1] < u.shape[0]:
        nodes.append(_node("Conv", [source, add(f"{prefix}/core", core)], f"{prefix}/core_out", f"{prefix}/core", list(node.attribute)))
        nodes.append(_node("Conv", [f"{prefix}/core_out", add(f"{prefix}/out", u[:, :, None, None]), *bias], node.output[0], name, one_by_one))
    else:
        core = np.einsum("oa,abhw->obhw", u, core)  # identity U: the core writes the output channels
        nodes.append(_node("Conv", [source, add(f"{prefix}/core", core), *bias], node.output[0], name, list(node.attribute)))
    return nodes


def factorised_model(model: onnx.ModelProto, factors: dict) -> onnx.ModelProto:
    """A copy of ``model`` with each layer of ``factors`` ({MatrixLayer: factors}, as
    slimtvm.compress.low_rank_ranks.approximation returns them) replaced by its chain."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    by_output = {layer.node.output[0]: (layer, parts) for layer, parts in factors.items()}
    names = {init.name for init in model.graph.initializer}

    def add(name: str, array: np.ndarray) -> str:
        while name in names:
            name += "_"
        names.add(name)
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    nodes = []
    for node in model.graph.node:
        entry = by_output.get(node.output[0]) if node.output else None
        if entry is None:
            nodes.append(node)
            continue
        layer, parts = entry
        nodes.extend(_chain(layer, parts, add, gemm_needs_c=opset < 11))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    read = {name for node in model.graph.node for name in node.input}
    read |= {name for node in model.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for name in _subgraph_inputs(a.g)}
    kept = [init for init in model.graph.initializer if init.name in read or init.name in {o.name for o in model.graph.output}]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _subgraph_inputs(graph) -> set:
    names = set()
    for node in graph.node:
        names.update(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _subgraph_inputs(a.g)
    return names
