"""``--binarize weights|weights+activations``: turn float layers into BWN or XNOR-Net form (lossy).

On the ONNX graph, before compilation: every Conv, Gemm and MatMul with constant weights — except
the layers kept float (by default the first and the last such layer, as BNN practice keeps them) —
gets weights ``α_c · sign(W)`` with ``α_c = mean |W|`` over output channel ``c`` (XNOR-Net), and
with ``weights+activations`` also a binarized input, ``Where(x < 0, −1, 1)`` (slimtvm's sign, so
exact zeros need no special case), fed in XNOR-Net block order (slimtvm.compress.xnor_blocks: BN →
binarizer → binary layer, the ReLUs between dropped, max-pools moved onto the real values before
the BN; with calibration data each binarizer's input centred on its per-channel median). Gemm and
MatMul layers whose input has more than two axes keep their binarizer where the input was (said in
the report). slimtvm's exact detection then compiles those layers to bitserial kernels
(weights-only layers keep a float input: the BWN case). With ``--calibration`` the α, bias and
signs of each binarized layer are refit by least squares (slimtvm.compress.reconstruction).

The error is measured with onnxruntime on calibration inputs (seeded normal inputs unless given):
for every binarized layer, the relative L2 error of its output against the float model's (errors
of earlier layers included, i.e. what the network sees there), and for the model's outputs the
relative error, cosine similarity and top-1 agreement. Refuses: an unknown mode, names in
``keep_float`` that are not layers of the model, a model without a layer to binarize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import SlimError
from ..frontend.shape_inference import inferred_shapes
from .lossy_error import calibration_inputs, describe_error, measure_error
from .reconstruction import describe_refits, refit_when_calibrated
from .weight_layers import attribute, kept_layers, layer_name, own_weight, weight_layers
from .xnor_blocks import centre_binarizer_input, drop_unread_nodes, xnor_input

MODES = ("weights", "weights+activations")


def binarize_model(model: onnx.ModelProto, mode: str, keep_float=("first", "last")) -> tuple:
    """(binarized copy of ``model``, [(name, op) binarized], [names kept float], {layer name: (β
    name, affine output)} of the XNOR-order affines before the binarizers, [names whose binarizer
    stayed where the input was]); see module doc."""
    if mode not in MODES:
        raise SlimError(f"--binarize must be one of {', '.join(MODES)}, not {mode!r}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    layers = weight_layers(model)
    if not layers:
        raise SlimError("--binarize: the model has no Conv, Gemm or MatMul layer with constant weights")
    names = [layer_name(node) for node, _, _ in layers]
    keep = kept_layers(names, keep_float)
    binarized, new_nodes, affines, not_reordered = [], [], {}, []
    by_node = {id(node): (weight, axis) for node, weight, axis in layers}
    ranks = _input_ranks(model)
    for node in model.graph.node:
        entry = by_node.get(id(node))
        if entry is not None and layer_name(node) not in keep:
            weight, axis = entry
            values = numpy_helper.to_array(weight).astype(np.float32)
            moved = np.moveaxis(values, axis, 0)
            alpha = np.abs(moved.reshape(moved.shape[0], -1)).mean(axis=1)
            alpha = np.where(alpha > 0, alpha, np.float32(1e-8)).astype(np.float32)
            signs = np.where(moved >= 0, 1.0, -1.0).astype(np.float32)
            binary = np.moveaxis(signs * alpha.reshape((-1,) + (1,) * (moved.ndim - 1)), 0, axis).astype(np.float32)
            weight = own_weight(model, node, weight, f"binary_{len(binarized)}")
            weight.CopyFrom(numpy_helper.from_array(binary, weight.name))
            if mode == "weights+activations":
                channels = _input_channels(node, weight)
                if node.op_type == "Conv" or ranks.get(node.input[0]) == 2:
                    path, beta, normalised = xnor_input(model, node, channels)
                    new_nodes.extend(path)
                    node.input[0] = normalised
                    affines[layer_name(node)] = (beta, normalised)
                else:
                    not_reordered.append(layer_name(node))
                new_nodes.extend(_sign_nodes(model, node, len(binarized)))
            binarized.append((layer_name(node), node.op_type))
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    drop_unread_nodes(model)
    return model, binarized, sorted(keep, key=names.index), affines, not_reordered


def _input_ranks(model: onnx.ModelProto) -> dict:
    inferred = inferred_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def _input_channels(node, weight) -> int:
    """Channels (axis 1) of ``node``'s input: a conv's ``I · group``, a Gemm's or MatMul's features."""
    dims = list(weight.dims)
    if node.op_type == "Conv":
        return dims[1] * attribute(node, "group", 1)
    if node.op_type == "Gemm":
        return dims[1] if attribute(node, "transB", 0) else dims[0]
    return dims[0]


def _sign_nodes(model: onnx.ModelProto, node, index: int) -> list:
    """Nodes computing ``where(x < 0, −1, 1)`` of ``node``'s input (slimtvm's sign: 0 → +1, so the
    compiled model and onnxruntime agree even on exact zeros, e.g. after a ReLU; ``Less`` and
    ``Where`` exist from opset 9); rewires ``node``."""
    prefix = f"{layer_name(node)}/binarize_input"
    names = {value: f"{prefix}/{value}" for value in ("zero", "one", "minus_one")}
    for value, number in (("zero", 0.0), ("one", 1.0), ("minus_one", -1.0)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(number, dtype=np.float32), names[value]))
    condition, out = f"{prefix}/negative", f"{prefix}/sign"
    nodes = [
        onnx.helper.make_node("Less", [node.input[0], names["zero"]], [condition], name=condition),
        onnx.helper.make_node("Where", [condition, names["minus_one"], names["one"]], [out], name=out),
    ]
    node.input[0] = out
    return nodes


@dataclass
class BinarizeRequest:
    """What ``--binarize`` asked for."""

    mode: str
    keep_float: tuple = ("first", "last")
    calibration: str | None = None  # .npz path; None: seeded normal inputs
    calibration_count: int = 8


def apply_request(model, request: BinarizeRequest, input_shapes: dict | None = None) -> tuple:
    """(binarized static-shape ModelProto, :class:`~slimtvm.compress.lossy_error.LossyReport`) for ``model`` (path or proto)."""
    from ..frontend.onnx_model import load_onnx, resolve_input_infos, with_static_inputs

    original = load_onnx(model)
    infos = resolve_input_infos(original, input_shapes)
    static = with_static_inputs(original, infos)
    binarized, layers, kept, affines, not_reordered = binarize_model(static, request.mode, request.keep_float)
    if not layers:
        raise SlimError("--binarize: every Conv/Gemm/MatMul layer is kept float (--keep-float); nothing to binarize")
    feeds = calibration_inputs(static, infos, request.calibration_count, request.calibration)
    extra = {"binarizers_not_reordered": not_reordered} if not_reordered else {}
    centred = []

    def centre(model, name):  # the layer's binarizer input, given the refit layers before it
        if name in affines:
            centre_binarizer_input(model, *affines[name], feeds)
            centred.append(name)

    binarized = refit_when_calibrated(static, binarized, [(name, "scale") for name, _ in layers], feeds, request.calibration, extra, prepare=centre)
    if centred:
        extra["binarizers_centred"] = len(centred)
    report = measure_error(static, binarized, layers, feeds, request.mode, kept)
    report.extra.update(extra)
    return binarized, report


def describe(report: dict) -> list:
    """Human-readable lines of a report's JSON form (the manifest's ``binarize_request``)."""
    headline = f"binarize on request ({report['mode']}): {len(report['layers'])} layers binarized, kept float: {', '.join(report['kept_float']) or 'none'}"
    lines = describe_error(report, headline, "lossy: retrain or fine-tune to recover accuracy")
    if report["mode"] == "weights+activations":
        centred = report.get("binarizers_centred")
        lines.append(
            "  binarizers in XNOR-Net block order (BN → sign → binary layer; ReLUs dropped, max-pools before the BN)"
            + (f"; {centred} centred on their calibration medians" if centred else "; not centred (no --calibration data)")
        )
        if report.get("binarizers_not_reordered"):
            lines.append(f"  binarizer left where the input was (input of more than 2 axes): {', '.join(report['binarizers_not_reordered'])}")
    return lines + describe_refits(report)
