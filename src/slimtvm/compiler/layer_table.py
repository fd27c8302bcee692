"""``slimtvm inspect``: a per-layer table of an ONNX model — op, shape, parameters, MACs, plan.

The table is read from the ONNX graph (shapes by ONNX shape inference). The "slimtvm" column says
what the compiler will do with each layer; for batch norms it is a preview by ONNX-level rules,
and :func:`pass_summary` gives the authoritative counts by running the real Relax passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .onnx_model import graph_inputs

LINEAR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class LayerRow:
    index: int
    name: str
    op: str
    output_shape: str
    params: int
    macs: int
    plan: str


def _shapes(model: onnx.ModelProto) -> dict:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _prod(values) -> int:
    return int(np.prod([v for v in values], dtype=np.int64)) if values else 1


def _attr(node, name, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _macs(node, shapes) -> int:
    """Multiply-accumulates of one node (0 for ops without a weight contraction, or unknown shapes)."""
    out = shapes.get(node.output[0]) if node.output else None
    if out is None or any(d is None for d in out):
        return 0
    if node.op_type == "Conv":
        weight = shapes.get(node.input[1])
        return _prod(out) * _prod(weight[1:]) if weight else 0
    if node.op_type == "ConvTranspose":
        weight, data = shapes.get(node.input[1]), shapes.get(node.input[0])
        if not weight or not data or any(d is None for d in data):
            return 0
        return _prod(data) * _prod(weight[1:])
    if node.op_type in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0])
        if not a or a[-1] is None:
            return 0
        k = a[0] if node.op_type == "Gemm" and _attr(node, "transA", 0) else a[-1]
        return _prod(out) * int(k)
    return 0


class _BatchNormPreview:
    """Mirror of the fold_batchnorm pass's rules on the ONNX graph, iterated like the pass.

    A BN already planned to fold is looked through: after a backward fold the next BN sees the
    linear layer as its producer; after a forward fold its readers see the BN's consumers.
    """

    def __init__(self, model: onnx.ModelProto, constants: set):
        self.constants = constants
        self.producers = {out: node for node in model.graph.node for out in node.output}
        self.consumers = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {value.name for value in model.graph.output}
        self.plans = {}  # BN node name → ("before"|"after", [nodes]) or ("decompose", reason)
        batchnorms = [node for node in model.graph.node if node.op_type == "BatchNormalization"]
        changed = True
        while changed:
            changed = False
            for node in batchnorms:
                if node.name not in self.plans:
                    plan = self._backward(node) or self._forward(node)
                    if plan:
                        self.plans[node.name] = plan
                        changed = True
        for node in batchnorms:
            if node.name not in self.plans:
                source = self._producer(node.input[0])
                before = source.op_type if source is not None else "graph input"
                self.plans[node.name] = ("decompose", f"after {before}; not every user is a conv/gemm")

    def _producer(self, tensor):
        node = self.producers.get(tensor)
        while node is not None and node.op_type == "BatchNormalization" and self.plans.get(node.name, ("",))[0] == "before":
            node = self.plans[node.name][1][0]
        return node

    def _readers(self, tensor) -> list:
        readers = []
        for node in self.consumers.get(tensor, []):
            if node.op_type == "BatchNormalization" and self.plans.get(node.name, ("",))[0] == "after":
                readers.extend(self._readers(node.output[0]))
            else:
                readers.append(node)
        return readers

    def _backward(self, node):
        source = self._producer(node.input[0])
        if (
            source is not None
            and source.op_type in LINEAR_OPS
            and len(source.input) > 1
            and source.input[1] in self.constants
            and len(self.consumers.get(node.input[0], [])) == 1
            and node.input[0] not in self.outputs
        ):
            return ("before", [source])
        return None

    def _forward(self, node):
        users = self._readers(node.output[0])
        foldable = [
            user
            for user in users
            if user.op_type in ("Conv", "Gemm", "MatMul")
            and len(user.input) > 1
            and user.input[1] in self.constants
            and user.input[1] != node.output[0]
            and not (user.op_type == "Gemm" and _attr(user, "transA", 0))
        ]
        if users and len(foldable) == len(users) and node.output[0] not in self.outputs:
            return ("after", users)
        return None

    def describe(self, node) -> str:
        kind, detail = self.plans[node.name]
        if kind == "decompose":
            return f"decompose to mul+add ({detail})"
        names = ", ".join(n.name or n.op_type for n in detail)
        return f"fold {'back' if kind == 'before' else 'forward'} into {names}"


BLOCK = 8  # channels per block of the blocked conv layout on AVX2 and NEON (16 with AVX-512)


def _conv_plan(node, shapes) -> str:
    """Which conv kernel the lowering picks (mirrors compiler/pipeline.py's layout choice)."""
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if not weight or len(weight) != 4:
        return "fp32 conv, generic schedule"
    cout, cin_per_group = weight[0], weight[1]
    groups = _attr(node, "group", 1)
    if groups == 1 and cout % BLOCK == 0:
        if cin_per_group % BLOCK:
            return f"fp32 conv, plain NCHW input → NCHW{BLOCK}c kernel"
        return f"fp32 conv, blocked NCHW{BLOCK}c kernel"
    if groups > 1 and groups == cout and cin_per_group == 1 and cout % BLOCK == 0:
        return f"fp32 depthwise conv, NCHW{BLOCK}c kernel"
    if groups > 1 and cout % BLOCK == 0 and cin_per_group % BLOCK == 0:
        return f"fp32 grouped conv, NCHW{BLOCK}c, generic schedule"
    return "fp32 conv, generic schedule"


def _binary_plan(decisions) -> str:
    """The plan of the next Sign-fed linear layer: the binarize pass's decision when known."""
    if decisions is None or not decisions:
        return "binary (XNOR + popcount) if the weights are ±α per channel; see the binarize summary"
    decision = decisions.pop(0)
    return "binary (XNOR + popcount, α per output channel)" if decision == "binary" else f"stays float: {decision}"


def layer_rows(model: onnx.ModelProto, binary_layers: list | None = None) -> list:
    """One :class:`LayerRow` per node of the (shape-inferred) model. ``binary_layers``: the
    binarize pass's per-layer decisions (its report's ``layers``), in graph order."""
    binary_decisions = list(binary_layers) if binary_layers is not None else None
    shapes = _shapes(model)
    constants = {init.name for init in model.graph.initializer}
    constants |= {node.output[0] for node in model.graph.node if node.op_type in ("Constant", "ConstantOfShape")}
    preview = _BatchNormPreview(model, constants)
    sign_outputs = {node.output[0] for node in model.graph.node if node.op_type == "Sign"}
    rows = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in ("Constant", "ConstantOfShape") and node.output[0] in constants and all(i in constants or i == "" for i in node.input):
            continue  # weights, not layers
        params = sum(_prod(shapes.get(name, [])) for name in node.input if name in constants and name in shapes)
        if node.op_type == "BatchNormalization":
            plan = preview.describe(node)
        elif node.op_type in ("Conv", "Gemm", "MatMul") and node.input[0] in sign_outputs:
            plan = _binary_plan(binary_decisions)
        elif node.op_type == "Conv":
            plan = _conv_plan(node, shapes)
        elif node.op_type == "ConvTranspose":
            plan = "fp32 conv-transpose, generic schedule"
        elif node.op_type in ("Gemm", "MatMul"):
            plan = "fp32 dense kernel"
        else:
            plan = "TVM op"
        out = shapes.get(node.output[0]) if node.output else None
        shape_text = "x".join("?" if d is None else str(d) for d in out) if out else "?"
        rows.append(LayerRow(index, node.name or f"{node.op_type}_{index}", node.op_type, shape_text, params, _macs(node, shapes), plan))
    return rows


def format_table(rows: list, model: onnx.ModelProto) -> str:
    """The rows as a fixed-width text table with a total line."""
    headers = ("#", "name", "op", "output", "params", "MACs", "slimtvm")
    body = [(str(r.index), r.name, r.op, r.output_shape, f"{r.params:,}", f"{r.macs:,}", r.plan) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    widths[1] = min(widths[1], 40)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = list(row)
        if len(cells[1]) > widths[1]:
            cells[1] = "…" + cells[1][-(widths[1] - 1):]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    inputs = ", ".join(f"{v.name}" for v in graph_inputs(model))
    lines.append(
        f"{len(rows)} layers, {sum(r.params for r in rows):,} parameters, {sum(r.macs for r in rows):,} MACs (inputs: {inputs})"
    )
    return "\n".join(lines)


def pass_summary(frontend_result) -> dict:
    """Run slimtvm's graph passes (no lowering) on an imported model and return their reports."""
    import tvm

    from .pipeline import graph_passes

    passes = graph_passes()
    tvm.transform.Sequential(passes.sequence())(frontend_result.mod)
    return passes.reports()
