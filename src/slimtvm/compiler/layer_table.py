"""``slimtvm inspect``: a per-layer table of an ONNX model — op, shape, parameters, MACs, plan.

Op, shape, parameters and MACs come from the ONNX graph (shapes by ONNX shape inference). The
"slimtvm" column holds the decisions the graph passes and the lowering recorded when they ran on
the model for the chosen target (:func:`recorded_decisions`): what happened to each batch norm,
and which kernel each conv and matmul got. Nothing here re-derives those rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..frontend.onnx_model import graph_inputs


@dataclass
class LayerRow:
    index: int
    name: str
    op: str
    output_shape: str
    params: int
    macs: int
    plan: str
    weights: str = ""


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


@dataclass
class LayerDecisions:
    """What the passes and the lowering recorded, per layer kind, in graph order (texts)."""

    batchnorms: list
    convs: list
    matmuls: list
    conv_weights: list | None = None  # per conv: zero weights and channels removed (texts)
    matmul_weights: list | None = None
    # which ConvTranspose nodes (indices among them) and which Gemm/MatMul nodes (among those) the
    # passes turned into convs: their decisions are among the convs' (lowering/transposed_convs.py,
    # passes/channels_first.py)
    conv_transposes: tuple = ()
    matmul_convs: tuple = ()


def _by_layer(indices: list, recorded: list) -> dict:
    """ONNX node index → the k-th recorded text for the k-th of ``indices`` (nodes of one kind).

    The importer keeps the ONNX node order, and no pass reorders layers, so the k-th
    BatchNormalization is the k-th ``batch_norm`` the BN pass saw, the k-th Conv the k-th conv2d
    the lowering recorded, and the k-th Gemm/MatMul the k-th matmul. Where the counts differ
    (a pass removed or added a layer) the rows say so instead of guessing."""
    if len(indices) == len(recorded):
        return dict(zip(indices, recorded))
    return {index: f"? ({len(recorded)} decisions recorded for {len(indices)} such layers)" for index in indices}


def _plans(model: onnx.ModelProto, decisions: LayerDecisions | None) -> tuple:
    """(ONNX node index → the decision slimtvm recorded for it, → its weights text)."""
    if decisions is None:
        return {}, {}
    plans, weights = {}, {}
    nodes = list(enumerate(model.graph.node))
    matmuls = [index for index, node in nodes if node.op_type in ("Gemm", "MatMul")]
    transposed = [index for index, node in nodes if node.op_type == "ConvTranspose"]
    as_convs = {matmuls[k] for k in decisions.matmul_convs if k < len(matmuls)}
    transposed_convs = {transposed[k] for k in decisions.conv_transposes if k < len(transposed)}
    convs = [index for index, node in nodes if node.op_type == "Conv" or index in as_convs or index in transposed_convs]
    plans.update(_by_layer([index for index, node in nodes if node.op_type == "BatchNormalization"], decisions.batchnorms))
    plans.update(_by_layer(convs, decisions.convs))
    plans.update(_by_layer([index for index in matmuls if index not in as_convs], decisions.matmuls))
    # the weight texts come from the graph passes, which run before the transposed convs are convs
    for indices, texts in (
        ([index for index in convs if index not in transposed_convs], decisions.conv_weights),
        ([i for i in matmuls if i not in as_convs], decisions.matmul_weights),
    ):
        if texts is not None:
            weights.update(_by_layer(indices, texts))
    return plans, weights


def weight_texts(reports: dict, op: str) -> list | None:
    """Per ``op`` layer (``conv2d`` or ``matmul``) in graph order: its share of zero weights and
    the channels the exact removal took away, from the passes' reports; None when the two reports
    do not list the same layers."""
    sparsity = [layer for layer in reports.get("sparsity", {}).get("layers", []) if layer["op"] == op]
    channels = [layer for layer in reports.get("dead_channels", {}).get("layers", []) if layer["op"] == op]
    if len(sparsity) != len(channels):
        return None
    texts = []
    for zeros, removed in zip(sparsity, channels):
        parts = [f"{100 * zeros['zeros']:.0f}% zero"] if zeros["zeros"] else []
        kind = "filters" if op == "conv2d" else "outputs"
        if removed["out_after"] != removed["out_before"]:
            parts.append(f"{kind} {removed['out_before']}→{removed['out_after']}")
        if removed["in_after"] != removed["in_before"]:
            parts.append(f"inputs {removed['in_before']}→{removed['in_after']}")
        texts.append(", ".join(parts))
    return texts


def layer_rows(model: onnx.ModelProto, decisions: LayerDecisions | None = None) -> list:
    """One :class:`LayerRow` per node of the (shape-inferred) model; the plan column holds the
    recorded ``decisions`` (empty without them, as ``inspect --no-passes`` prints)."""
    shapes = _shapes(model)
    constants = {init.name for init in model.graph.initializer}
    constants |= {node.output[0] for node in model.graph.node if node.op_type in ("Constant", "ConstantOfShape")}
    plans, weights = _plans(model, decisions)
    rows = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in ("Constant", "ConstantOfShape") and node.output[0] in constants and all(i in constants or i == "" for i in node.input):
            continue  # weights, not layers
        params = sum(_prod(shapes.get(name, [])) for name in node.input if name in constants and name in shapes)
        plan = plans.get(index, "TVM op" if decisions is not None else "")
        out = shapes.get(node.output[0]) if node.output else None
        shape_text = "x".join("?" if d is None else str(d) for d in out) if out else "?"
        row = LayerRow(index, node.name or f"{node.op_type}_{index}", node.op_type, shape_text, params, _macs(node, shapes), plan, weights.get(index, ""))
        rows.append(row)
    return rows


def format_table(rows: list, model: onnx.ModelProto) -> str:
    """The rows as a fixed-width text table with a total line."""
    headers = ("#", "name", "op", "output", "params", "MACs", "weights", "slimtvm")
    body = [(str(r.index), r.name, r.op, r.output_shape, f"{r.params:,}", f"{r.macs:,}", r.weights, r.plan) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    widths[1] = min(widths[1], 40)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = list(row)
        if len(cells[1]) > widths[1]:
            cells[1] = "…" + cells[1][-(widths[1] - 1) :]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    inputs = ", ".join(f"{v.name}" for v in graph_inputs(model))
    lines.append(f"{len(rows)} layers, {sum(r.params for r in rows):,} parameters, {sum(r.macs for r in rows):,} MACs (inputs: {inputs})")
    return "\n".join(lines)


def decisions_from_manifest(manifest: dict) -> LayerDecisions:
    """The :class:`LayerDecisions` a compile recorded in its artifact's manifest."""
    batchnorms = next(entry["layers"] for entry in manifest["passes"] if entry["name"] == "fold_batchnorm")
    layers = manifest["layers"]
    reports = {entry["name"]: entry for entry in manifest["passes"]}
    return LayerDecisions(
        list(batchnorms),
        [r["plan"] for r in layers if r["op"] == "conv2d"],
        [r["plan"] for r in layers if r["op"] == "matmul"],
        weight_texts(reports, "conv2d"),
        weight_texts(reports, "matmul"),
        *_rewritten_positions(reports),
    )


def _rewritten_positions(reports: dict) -> tuple:
    """(ConvTranspose positions, Gemm/MatMul positions) that became convs, from the reports
    (empty for artifacts compiled before those rewrites)."""
    return (
        tuple(reports.get("transposed_convs", {}).get("positions", ())),
        tuple(reports.get("channels_first", {}).get("matmul_positions", ())),
    )


def recorded_decisions(frontend_result, tvm_target, target_name=None, conv_algorithm: str = "auto") -> tuple:
    """Run slimtvm's graph passes and lowering to kernels (no code generation) for
    ``tvm_target`` on an imported model; (their reports, :class:`LayerDecisions`). With
    ``target_name`` (a preset) that runs on this machine, convs near the sparse choice's
    thresholds are timed as ``compile`` times them; ``conv_algorithm`` as ``compile``'s."""
    import tvm

    from ..lowering.layer_records import records_of
    from .layer_timing import conv_timer, discard_timer
    from .pipeline import pipeline_for

    timer = conv_timer(target_name, options={"conv_algorithm": conv_algorithm}) if target_name is not None else None
    try:
        pipeline = pipeline_for(tvm_target, timer=timer, conv_algorithm=conv_algorithm)
        with tvm_target:
            tvm.transform.Sequential(pipeline.to_kernels())(frontend_result.mod)
    finally:
        discard_timer(timer)
    reports = pipeline.reports()
    records = pipeline.layer_records
    decisions = LayerDecisions(
        list(reports["fold_batchnorm"]["layers"]),
        [record.plan for record in records_of("conv2d", records)],
        [record.plan for record in records_of("matmul", records)],
        weight_texts(reports, "conv2d"),
        weight_texts(reports, "matmul"),
        *_rewritten_positions(reports),
    )
    return reports, decisions
