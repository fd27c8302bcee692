"""``--prune AMOUNT`` and ``--prune-filters AMOUNT``: magnitude pruning of float layers (lossy).

On the ONNX graph, before compilation, as ``torch.nn.utils.prune`` does it:

* ``--prune AMOUNT --prune-scope global`` (default): the ``round(AMOUNT · n)`` weights of smallest
  magnitude among all ``n`` weights of the pruned layers together become 0
  (``prune.global_unstructured(..., pruning_method=L1Unstructured, amount=AMOUNT)``);
  ``--prune-scope layer``: the same per layer (``prune.l1_unstructured``).
* ``--prune-filters AMOUNT``: in every pruned Conv, the ``round(AMOUNT · filters)`` filters
  (output channels) of smallest L1 norm become 0 (``prune.ln_structured(n=1, dim=0)``); the
  compile then removes them exactly (passes/remove_dead_channels.py).

With both, the filters are pruned first; ``AMOUNT`` of ``--prune`` is then the share of all the
weights that end zero (the pruned filters count towards it), where torch's iterative pruning
would take AMOUNT of the weights left. Pruned layers: every Conv, Gemm and MatMul with constant
weights but those ``--keep-float`` names (default: none). Ties in magnitude are broken by
position (a stable sort), so a pruning is reproducible.

The error is measured as for ``--binarize`` (slimtvm.compress.lossy_error). Refuses: an amount
outside (0, 1), an unknown scope, ``--prune-filters`` on a model without a Conv to prune, names in
``keep_float`` that are not layers of the model, a model without a layer to prune.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import SlimError
from .lossy_error import calibration_inputs, describe_error, measure_error
from .reconstruction import describe_refits, refit_when_calibrated
from .weight_layers import kept_layers, layer_name, own_weight, weight_layers

SCOPES = ("global", "layer")


@dataclass
class PruneRequest:
    """What ``--prune`` / ``--prune-filters`` asked for."""

    amount: float | None = None  # share of weights to zero (unstructured)
    scope: str = "global"
    filters: float | None = None  # share of each conv's filters to zero
    keep_float: tuple = ("none",)
    calibration: str | None = None  # .npz path; None: seeded normal inputs
    calibration_count: int = 8

    def check(self) -> None:
        """Refuse (``SlimError``) amounts outside (0, 1), an unknown scope, or nothing asked."""
        if self.amount is None and self.filters is None:
            raise SlimError("pruning needs --prune AMOUNT or --prune-filters AMOUNT")
        for flag, value in (("--prune", self.amount), ("--prune-filters", self.filters)):
            if value is not None and not 0.0 < value < 1.0:
                raise SlimError(f"{flag} {value:g}: the share to prune must lie strictly between 0 and 1 (e.g. 0.9)")
        if self.scope not in SCOPES:
            raise SlimError(f"--prune-scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")

    @property
    def mode(self) -> str:
        parts = []
        if self.filters is not None:
            parts.append(f"{100 * self.filters:g}% of each conv's filters (L1)")
        if self.amount is not None:
            parts.append(f"{100 * self.amount:g}% of weights ({self.scope} L1 magnitude)")
        return ", then ".join(parts)


def _smallest(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest of ``magnitudes`` (ties: the earlier index first)."""
    return np.argsort(magnitudes, kind="stable")[:count]


def prune_weights(weights: list, request: PruneRequest, is_conv: list) -> list:
    """``weights`` (numpy, output channels on axis 0) pruned as ``request`` says; ``is_conv``
    marks the layers whose filters ``--prune-filters`` prunes."""
    # C-ordered copies: a MatMul's or Gemm's weight arrives as a moved-axis view, whose astype()
    # copy keeps the view's strides, and reshape(-1) of that is a copy the zeros would go to
    # (MatMul weights came out unpruned)
    weights = [np.array(w, dtype=np.float32, order="C") for w in weights]
    if request.filters is not None:
        for weight, conv in zip(weights, is_conv):
            if conv:
                norms = np.abs(weight.reshape(weight.shape[0], -1)).sum(axis=1)
                weight[_smallest(norms, int(round(request.filters * weight.shape[0])))] = 0
    if request.amount is not None:
        if request.scope == "global":
            flat = np.concatenate([np.abs(w).ravel() for w in weights])
            mask = np.ones(flat.size, bool)
            mask[_smallest(flat, int(round(request.amount * flat.size)))] = False
            start = 0
            for weight in weights:
                weight.reshape(-1)[~mask[start : start + weight.size]] = 0
                start += weight.size
        else:
            for weight in weights:
                weight.reshape(-1)[_smallest(np.abs(weight).ravel(), int(round(request.amount * weight.size)))] = 0
    return weights


def prune_model(model: onnx.ModelProto, request: PruneRequest) -> tuple:
    """(pruned copy of ``model``, [(name, op) pruned], [names kept float], {name: share of zero
    weights} per pruned layer, share of zero weights in the pruned layers); see module doc."""
    request.check()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    layers = weight_layers(model)
    if not layers:
        raise SlimError("--prune: the model has no Conv, Gemm or MatMul layer with constant weights")
    names = [layer_name(node) for node, _, _ in layers]
    keep = kept_layers(names, request.keep_float)
    chosen = [(node, weight, axis) for node, weight, axis in layers if layer_name(node) not in keep]
    if not chosen:
        raise SlimError("--prune: every Conv/Gemm/MatMul layer is kept float (--keep-float); nothing to prune")
    is_conv = [node.op_type == "Conv" for node, _, _ in chosen]
    if request.filters is not None and not any(is_conv):
        raise SlimError("--prune-filters: the model has no Conv layer to prune filters of (use --prune for Gemm/MatMul weights)")
    moved = [np.moveaxis(numpy_helper.to_array(weight), axis, 0) for _, weight, axis in chosen]
    pruned = prune_weights(moved, request, is_conv)
    zeros = total = 0
    per_layer = {}
    for (node, weight, axis), values in zip(chosen, pruned):
        weight = own_weight(model, node, weight, "pruned")
        weight.CopyFrom(numpy_helper.from_array(np.moveaxis(values, 0, axis).astype(np.float32), weight.name))
        zeros += int((values == 0).sum())
        total += values.size
        per_layer[layer_name(node)] = round(float((values == 0).mean()), 4)
    return model, [(layer_name(node), node.op_type) for node, _, _ in chosen], sorted(keep, key=names.index), per_layer, zeros / total


def apply_request(model, request: PruneRequest, input_shapes: dict | None = None) -> tuple:
    """(pruned static-shape ModelProto, :class:`~slimtvm.compress.lossy_error.LossyReport`) for
    ``model`` (path or proto)."""
    from ..frontend.onnx_model import load_onnx, resolve_input_infos, with_static_inputs

    original = load_onnx(model)
    infos = resolve_input_infos(original, input_shapes)
    static = with_static_inputs(original, infos)
    pruned, layers, kept, per_layer, zeros = prune_model(static, request)
    feeds = calibration_inputs(static, infos, request.calibration_count, request.calibration)
    extra = {}
    pruned = refit_when_calibrated(static, pruned, [(name, "mask") for name, _ in layers], feeds, request.calibration, extra)
    report = measure_error(static, pruned, layers, feeds, request.mode, kept, flag="--prune")
    report.extra.update(extra)
    report.extra["zero_weights"] = round(zeros, 4)
    report.extra["layer_zeros"] = per_layer
    return pruned, report


def describe(report: dict) -> list:
    """Human-readable lines of a report's JSON form (the manifest's ``prune_request``); a layer
    whose every weight was pruned is named (its output no longer depends on its input)."""
    headline = (
        f"prune on request ({report['mode']}): {len(report['layers'])} layers pruned, {100 * report['zero_weights']:.1f}% of their weights zero, "
        f"kept float: {', '.join(report['kept_float']) or 'none'}"
    )
    lines = describe_error(report, headline, "lossy: fine-tune the --save-onnx model to recover accuracy")
    zeros = report.get("layer_zeros", {})
    for index, layer in enumerate(report["layers"], start=1):
        share = zeros.get(layer["name"])
        if share is not None:
            lines[index] += f", {100 * share:.1f}% of its weights zero" + (
                " — every weight pruned: its output no longer depends on its input" if share == 1.0 else ""
            )
    return lines + describe_refits(report)
