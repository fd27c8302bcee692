"""``--low-rank SPEC``: factorise float layers into chains of smaller ones (lossy, reported).

On the ONNX graph, before compilation: every Conv (group 1), Gemm and MatMul with constant weights
but the ``--keep-float`` ones (default: the first layer, whose few input channels leave nothing
to factorise, and the last, the classifier, as the low-rank literature keeps them) gets the ranks
SPEC asks for (slimtvm.compress.low_rank_ranks), is factorised (truncated SVD; Tucker-2 with HOOI
for k×k convs: slimtvm.compress.low_rank_factors) and rewritten as a chain of plain layers
(slimtvm.compress.low_rank_rewrite). Grouped and depthwise convs stay as they are.

The speed gate: by default a layer is factorised only where its chain runs faster than the layer
on the target (by :data:`MEASURED_SPEEDUP`, above timing noise). ``time_layers`` (given by the
compiler, which can build and time code) times a one-layer model of each against a one-layer
model of its chain; where nothing can be timed (a
cross target) a layer is factorised when its multiply-accumulates fall at least
:data:`UNMEASURED_MAC_REDUCTION`-fold, and the report says so. ``speed_gate=False`` factorises
every layer SPEC reduces (for accuracy studies).

The error is reported as for the other lossy steps (slimtvm.compress.lossy_error), with each
layer's ranks, multiply-accumulates before and after, and both times. Refuses: an unparsable SPEC,
a rank that rounds to 0, unknown ``--keep-float`` names, a model without a layer to factorise.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from ..errors import SlimError
from ..frontend.shape_inference import inferred_shapes
from .layer_inputs import layer_input_rows
from .lossy_error import calibration_inputs, describe_error, measure_error
from .low_rank_ranks import approximation, choose_ranks, factorised_macs, parse_spec
from .low_rank_rewrite import factorised_model
from .matrix_layers import linear_macs, matrix_layers
from .reconstruction import describe_refits, refit_when_calibrated
from .weight_layers import kept_layers, layer_name, weight_layers

UNMEASURED_MAC_REDUCTION = 2.0
MEASURED_SPEEDUP = 1.03  # the chain must be this much faster: closer is within timing noise


@dataclass
class LowRankRequest:
    """What ``--low-rank`` asked for."""

    spec: str
    keep_float: tuple = ("first", "last")
    calibration: str | None = None  # .npz path; None: seeded normal inputs
    calibration_count: int = 8
    speed_gate: bool = True


def single_layer_model(model: onnx.ModelProto, layer) -> onnx.ModelProto:
    """A model of ``layer`` alone, input ``x`` (its static input shape) to output ``y``, for timing."""
    shapes = {v.name: v for v in inferred_shapes(model).graph.value_info}
    shapes.update({v.name: v for v in list(model.graph.input) + list(model.graph.output)})
    node = onnx.NodeProto()
    node.CopyFrom(layer.node)
    source = onnx.ValueInfoProto()
    source.CopyFrom(shapes[node.input[0]])
    source.name, node.input[0], node.output[0] = "x", "x", "y"
    needed = set(node.input[1:])
    graph = helper.make_graph(
        [node],
        "layer",
        [source],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [init for init in model.graph.initializer if init.name in needed],
    )
    alone = helper.make_model(graph, opset_imports=list(model.opset_import))
    alone.ir_version = model.ir_version
    return alone


def _decide(layer, choice, factors, model, request, time_layers) -> dict:
    """The layer's report entry; ``factorised`` says whether the chain goes in."""
    entry = {"name": layer.name, "op": layer.op, "ranks": list(choice.ranks), "macs": layer.macs}
    if not choice.factorised:
        return {**entry, "factorised": False, "reason": choice.reason}
    entry["factorised_macs"] = factorised_macs(layer, choice.ranks)
    reduction = layer.macs / entry["factorised_macs"]
    if not request.speed_gate:
        return {**entry, "factorised": True, "reason": "speed gate off"}
    alone = single_layer_model(model, layer)
    chain = factorised_model(alone, {matrix_layers(alone)[0]: factors})
    times = time_layers(alone, chain) if time_layers is not None else None
    if times is None:
        passes = reduction >= UNMEASURED_MAC_REDUCTION
        why = f"not timed on this target: MACs fall {reduction:.1f}-fold ({'≥' if passes else '<'} {UNMEASURED_MAC_REDUCTION:g})"
        return {**entry, "factorised": passes, "reason": why}
    dense_ms, chain_ms = times
    entry.update(dense_ms=round(dense_ms, 4), factorised_ms=round(chain_ms, 4))
    faster = chain_ms * MEASURED_SPEEDUP < dense_ms
    return {**entry, "factorised": faster, "reason": "measured faster" if faster else f"measured less than {MEASURED_SPEEDUP:g}× faster than the layer"}


def apply_request(model, request: LowRankRequest, input_shapes: dict | None = None, time_layers=None) -> tuple:
    """(factorised static-shape ModelProto, :class:`~slimtvm.compress.lossy_error.LossyReport`)
    for ``model`` (path or proto); ``time_layers(layer model, chain model)`` → (ms, ms) or None
    (see module doc)."""
    from ..frontend.onnx_model import load_onnx, resolve_input_infos, with_static_inputs

    spec = parse_spec(request.spec)
    original = load_onnx(model)
    infos = resolve_input_infos(original, input_shapes)
    static = with_static_inputs(original, infos)
    names = [layer_name(node) for node, _, _ in weight_layers(static)]
    if not names:
        raise SlimError("--low-rank: the model has no Conv, Gemm or MatMul layer with constant weights")
    keep = kept_layers(names, request.keep_float)
    layers = [layer for layer in matrix_layers(static) if layer.name not in keep]
    if not layers:
        raise SlimError("--low-rank: no Conv (group 1), Gemm or MatMul layer left to factorise (grouped convs and --keep-float layers stay)")
    feeds = calibration_inputs(static, infos, request.calibration_count, request.calibration)
    rows = layer_input_rows(static, layers, feeds) if spec.kind == "error" else {}
    entries, factors = [], {}
    for layer in layers:
        choice = choose_ranks(layer, spec, rows.get(layer.name))
        parts = approximation(layer, choice.ranks)[0] if choice.factorised else None
        entry = _decide(layer, choice, parts, static, request, time_layers)
        entries.append(entry)
        if entry["factorised"]:
            factors[layer] = parts
    rewritten = factorised_model(static, factors)
    done = [(layer.name, layer.op) for layer in factors]
    extra = {}
    rewritten = refit_when_calibrated(static, rewritten, [(name, "dense") for name, _ in done], feeds, request.calibration, extra)
    kept = sorted(keep, key=names.index)
    if done:
        report = measure_error(static, rewritten, done, feeds, f"low rank, {spec}", kept, flag="--low-rank")
    else:
        from .lossy_error import LossyReport

        report = LossyReport(f"low rank, {spec}", kept_float=kept, calibration_inputs=len(feeds), top1_agreement=f"{len(feeds)}/{len(feeds)}")
    macs_before, macs_after = linear_macs(static), linear_macs(rewritten)
    report.extra.update(extra)
    report.extra.update(low_rank_layers=entries, macs_before=macs_before, macs_after=macs_after, speed_gate=request.speed_gate)
    return rewritten, report


def describe(report: dict) -> list:
    """Human-readable lines of a report's JSON form (the manifest's ``low_rank_request``): the
    headline, each factorised layer's error, ranks, MACs and times, then the layers left whole."""
    entries = report.get("low_rank_layers", [])
    done = [e for e in entries if e["factorised"]]
    before, after = report["macs_before"], report["macs_after"]
    headline = (
        f"low rank on request ({report['mode']}): {len(done)} of {len(entries)} layers factorised, "
        f"MACs of all Conv/Gemm/MatMul layers {before / 1e6:.1f} M → {after / 1e6:.1f} M ({before / max(after, 1):.2f}× fewer), "
        f"kept float: {', '.join(report['kept_float']) or 'none'}"
    )
    lines = describe_error(report, headline, "lossy: --calibration data or fine-tuning the --save-onnx model recovers accuracy")
    by_name = {e["name"]: e for e in done}
    for index, layer in enumerate(report["layers"], start=1):
        lines[index] += _figures(by_name[layer["name"]])
    for entry in entries:
        if not entry["factorised"]:
            lines.append(f"  {entry['name']} ({entry['op']}) left whole: {entry['reason']}{_figures(entry)}")
    return lines + describe_refits(report)


def _figures(entry: dict) -> str:
    text = f", ranks {'×'.join(map(str, entry['ranks']))}"
    if "factorised_macs" in entry:
        text += f", MACs {entry['macs'] / 1e6:.2f} M → {entry['factorised_macs'] / 1e6:.2f} M"
    if "dense_ms" in entry:
        text += f", {entry['dense_ms']:.3f} ms → {entry['factorised_ms']:.3f} ms"
    if entry["factorised"]:
        text += f" ({entry['reason']})"
    return text
