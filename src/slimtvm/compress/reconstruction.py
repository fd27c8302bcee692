"""Data-aware reconstruction: refit a lossy rewrite's free parameters by least squares.

For each rewritten layer in graph order, onnxruntime gives, on the calibration inputs, what the
layer's *last node* reads in the rewritten model (so the errors of earlier, already refit layers
are part of it and do not accumulate) and what the original layer wrote at the same output
positions (the target). The last node's parameters are then refit by ridge-regularised least
squares (Zhang et al. 2015; He et al. 2017), the rest of the rewrite kept:

* ``dense``: its whole weight and bias (the last factor of a low-rank chain: U of Tucker-2, the
  left factor of an SVD);
* ``mask``: the nonzero weights of each output channel, zeros kept zero, and the bias (a pruned
  layer);
* ``scale``: a binarized layer's α per output channel, bias and signs: rounds of α and bias by
  least squares, then a sweep of single sign flips, each kept when it lowers the channel's squared
  error (the weights stay ±α per channel, so the layer stays binary).

A bias is added where the layer had none (Conv, Gemm; a MatMul has no bias input, so only its
weights move). The ridge term is :data:`RIDGE` times the mean diagonal of the normal matrix. Memory
stays bounded: at most ``max_rows`` output positions per layer, drawn uniformly (seeded) across
the calibration inputs. A refit whose calibration error is not lower than before is discarded, so
reconstruction never makes a layer worse on the calibration data. Refused, with a reason in the
report and the layer left as it was: fewer rows than parameters per output channel (too few
calibration samples), grouped convs, and Gemms with ``transA``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .layer_inputs import MAX_ROWS, conv_patches
from .lossy_error import onnxruntime_runs
from .weight_layers import attribute, layer_name

RIDGE = 1e-6
SIGN_ROUNDS = 5  # binarized layers: rounds of scale/bias fit + sign-flip sweep
STRUCTURES = ("dense", "mask", "scale")


@dataclass
class Refit:
    """One layer's reconstruction: calibration error before and after, or why it was skipped."""

    name: str
    error_before: float | None = None
    error_after: float | None = None
    skipped: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "error_before": self.error_before, "error_after": self.error_after, "skipped": self.skipped}


def _positions(shape: list, node, count: int, rng: np.random.Generator) -> tuple:
    """Sampled output positions of ``node``: (batch, y, x) for a conv, row indices otherwise."""
    if node.op_type == "Conv":
        n, _, h, w = shape
        chosen = rng.choice(n * h * w, size=min(count, n * h * w), replace=False)
        batch, rest = np.divmod(chosen, h * w)
        return (batch, *np.divmod(rest, w))
    rows = int(np.prod(shape[:-1]))
    return (rng.choice(rows, size=min(count, rows), replace=False),)


def _features(node, x: np.ndarray, positions: tuple, kernel: tuple) -> np.ndarray:
    """The rows the node's weight multiplies at ``positions``: conv patches, or input rows."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1])[positions[0]]
    return conv_patches(node, x, *positions, kernel)


def _targets(node, y: np.ndarray, positions: tuple) -> np.ndarray:
    if node.op_type != "Conv":
        return y.reshape(-1, y.shape[-1])[positions[0]]
    batch, oy, ox = positions
    return y[batch, :, oy, ox]


class _LinearNode:
    """A Conv/Gemm/MatMul node's weight as a matrix (outputs × features) and its bias, readable
    and writable in the model."""

    def __init__(self, model: onnx.ModelProto, node):
        self.model, self.node = model, node
        self.inits = {init.name: init for init in model.graph.initializer}
        weight = numpy_helper.to_array(self.inits[node.input[1]]).astype(np.float64)
        self.shape = weight.shape
        if node.op_type == "Conv":
            self.kernel = weight.shape[2:]
            self.matrix = weight.reshape(weight.shape[0], -1)
        elif node.op_type == "Gemm":
            self.kernel = ()
            self.alpha, self.beta = attribute(node, "alpha", 1.0), attribute(node, "beta", 1.0)
            self.trans_b = attribute(node, "transB", 0)
            self.matrix = self.alpha * (weight if self.trans_b else weight.T)
        else:
            self.kernel = ()
            self.matrix = weight.T
        self.bias = np.zeros(self.matrix.shape[0])
        if node.op_type != "MatMul" and len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(self.inits[node.input[2]]).astype(np.float64).reshape(-1)
            scale = self.beta if node.op_type == "Gemm" else 1.0
            self.bias = np.broadcast_to(scale * bias, self.matrix.shape[0]).copy()

    @property
    def has_bias_input(self) -> bool:
        return self.node.op_type != "MatMul"

    def write(self, matrix: np.ndarray, bias: np.ndarray) -> None:
        node = self.node
        if node.op_type == "Conv":
            weight = matrix.reshape(self.shape)
        elif node.op_type == "Gemm":
            weight = matrix / self.alpha if self.trans_b else (matrix / self.alpha).T
        else:
            weight = matrix.T
        init = self.inits[node.input[1]]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight, np.float32), init.name))
        if not self.has_bias_input:
            return
        values = bias / (self.beta if node.op_type == "Gemm" else 1.0)
        if len(node.input) > 2 and node.input[2]:
            init = self.inits[node.input[2]]
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float32), init.name))
        else:
            name = f"{layer_name(node)}/refit_bias"
            self.model.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
            while len(node.input) < 2:
                node.input.append("")
            node.input.append(name)


def _ridge(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least squares ``features @ solution ≈ targets`` with a small ridge term."""
    normal = features.T @ features
    normal[np.diag_indices_from(normal)] += RIDGE * max(float(np.mean(np.diag(normal))), 1e-30)
    return np.linalg.solve(normal, features.T @ targets)


def _refit(structure: str, matrix: np.ndarray, features: np.ndarray, targets: np.ndarray, with_bias: bool) -> tuple:
    """(matrix, bias) refit on (features, targets) keeping ``structure``."""
    ones = np.ones((features.shape[0], 1))
    augmented = np.hstack([features, ones]) if with_bias else features
    if structure == "dense":
        solution = _ridge(augmented, targets)
        return solution[: matrix.shape[1]].T, (solution[-1] if with_bias else np.zeros(matrix.shape[0]))
    if structure == "scale":
        return _refit_signs_and_scales(matrix, features, targets, with_bias)
    new, bias = np.zeros_like(matrix), np.zeros(matrix.shape[0])
    for o in range(matrix.shape[0]):
        keep = np.flatnonzero(matrix[o])
        columns = np.hstack([features[:, keep], ones]) if with_bias else features[:, keep]
        solution = _ridge(columns, targets[:, o])
        new[o, keep] = solution[: keep.size]
        bias[o] = solution[-1] if with_bias else 0.0
    return new, bias


def _scales_and_bias(signs: np.ndarray, features: np.ndarray, targets: np.ndarray, with_bias: bool, fallback: np.ndarray) -> tuple:
    """Per output channel o, the least-squares (a_o, b_o) of ``targets[:, o] ≈ a_o · features @
    signs[o] + b_o``; where the data leave a_o at 0 (a constant projection), a_o = ``fallback[o]``
    so that the weights stay ±α with α ≠ 0 and the layer stays binary."""
    projected = features @ signs.T  # rows × outputs
    if with_bias:
        centred_p, centred_t = projected - projected.mean(axis=0), targets - targets.mean(axis=0)
    else:
        centred_p, centred_t = projected, targets
    power = np.einsum("ro,ro->o", centred_p, centred_p)
    scales = np.einsum("ro,ro->o", centred_p, centred_t) / np.maximum(power, 1e-30)
    scales = np.where(np.abs(scales) > 1e-12, scales, fallback)
    bias = targets.mean(axis=0) - scales * projected.mean(axis=0) if with_bias else np.zeros(signs.shape[0])
    return scales, bias


def _refit_signs_and_scales(matrix: np.ndarray, features: np.ndarray, targets: np.ndarray, with_bias: bool) -> tuple:
    """(α_o · signs, bias) of a binarized layer: rounds of (a) per-channel scale and bias by least
    squares and (b) a sweep of single sign flips, each taken when it lowers the channel's squared
    error (the exact change, from the normal matrix; the objective is quadratic in the signs)."""
    signs = np.where(matrix >= 0, 1.0, -1.0)
    fallback = np.maximum(np.abs(matrix).max(axis=1), 1e-8)
    gram = features.T @ features  # K × K
    diagonal = np.diag(gram)
    for _ in range(SIGN_ROUNDS):
        scales, bias = _scales_and_bias(signs, features, targets, with_bias, fallback)
        correlation = features.T @ (targets - bias)  # K × outputs: Xᵀ(y − b)
        gram_signs = gram @ signs.T  # K × outputs
        flips = 0
        for k in range(gram.shape[0]):
            s = signs[:, k]
            # change of ‖a X s + b − y‖² when s_k flips: 4a²(G_kk − s_k (G s)_k) + 4a s_k c_k
            change = 4 * scales * scales * (diagonal[k] - s * gram_signs[k]) + 4 * scales * s * correlation[k]
            flip = change < 0
            if flip.any():
                gram_signs -= 2 * np.outer(gram[:, k], np.where(flip, s, 0.0))
                signs[flip, k] = -s[flip]
                flips += int(flip.sum())
        if not flips:
            break
    scales, bias = _scales_and_bias(signs, features, targets, with_bias, fallback)
    return scales[:, None] * signs, bias


def _error(matrix, bias, features, targets) -> float:
    scale = float(np.linalg.norm(targets))
    return float(np.linalg.norm(features @ matrix.T + bias - targets)) / scale if scale else 0.0


def reconstruct(
    original: onnx.ModelProto, rewritten: onnx.ModelProto, layers: list, calibration: list, max_rows: int = MAX_ROWS, seed: int = 0, prepare=None
) -> tuple:
    """(refit copy of ``rewritten``, [Refit per layer]): ``layers`` are (name, structure) pairs in
    graph order, ``name`` being the layer's name in ``original`` and the name of its chain's last
    node in ``rewritten`` (see module doc). ``prepare(model, name)``, if given, runs on the copy
    before each layer's inputs are collected (e.g. to set what feeds that layer from the refit
    layers before it)."""
    model = onnx.ModelProto.FromString(rewritten.SerializeToString())
    reference_outputs = {name: next(n for n in original.graph.node if layer_name(n) == name).output[0] for name, _ in layers}
    share = max(1, max_rows // max(1, len(calibration)))
    rng = np.random.default_rng(seed)
    nodes = {name: next(n for n in model.graph.node if layer_name(n) == name) for name, _ in layers}
    positions, targets = {name: [] for name, _ in layers}, {name: [] for name, _ in layers}
    for outputs in onnxruntime_runs(original, calibration, list(reference_outputs.values()), "--calibration"):
        for name, _ in layers:
            wanted = outputs[reference_outputs[name]].astype(np.float64)
            positions[name].append(_positions(list(wanted.shape), nodes[name], share, rng))
            targets[name].append(_targets(nodes[name], wanted, positions[name][-1]))
    results = []
    for name, structure in layers:
        node = nodes[name]
        if prepare is not None:
            prepare(model, name)
        skipped = _unsupported(model, node)
        if skipped:
            results.append(Refit(name, skipped=skipped))
            continue
        linear = _LinearNode(model, node)
        parameters = int(np.max(np.count_nonzero(linear.matrix, axis=1))) if structure == "mask" else linear.matrix.shape[1]
        parameters += int(linear.has_bias_input)
        reads = onnxruntime_runs(model, calibration, [node.input[0]], "--calibration")
        features = np.concatenate([_features(node, r[node.input[0]].astype(np.float64), where, linear.kernel) for r, where in zip(reads, positions[name])])
        wanted = np.concatenate(targets[name])
        before = _error(linear.matrix, linear.bias, features, wanted)
        if features.shape[0] < parameters:
            results.append(
                Refit(name, before, skipped=f"too few calibration rows ({features.shape[0]}) for {parameters} parameters per output channel: not refit")
            )
            continue
        matrix, bias = _refit(structure, linear.matrix, features, wanted, linear.has_bias_input)
        after = _error(matrix, bias, features, wanted)
        if after < before:
            linear.write(matrix, bias)
            results.append(Refit(name, before, after))
        else:
            results.append(Refit(name, before, before, skipped="the refit did not lower the error: kept"))
    return model, results


def _unsupported(model: onnx.ModelProto, node) -> str:
    """Why ``node`` cannot be refit ('' when it can)."""
    if node.op_type == "Conv" and attribute(node, "group", 1) != 1:
        return "grouped conv: not refit"
    if node.op_type == "Gemm" and attribute(node, "transA", 0):
        return "Gemm with transA: not refit"
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = next((init for init in model.graph.initializer if init.name == node.input[2]), None)
        weight = next(init for init in model.graph.initializer if init.name == node.input[1])
        outputs = weight.dims[0] if attribute(node, "transB", 0) else weight.dims[1]
        if bias is None or int(np.prod(bias.dims)) not in (1, outputs):
            return "Gemm whose C is not a constant vector: not refit"
    return ""


def refit_when_calibrated(original, rewritten, layers: list, calibration: list, path: str | None, report_extra: dict, prepare=None) -> onnx.ModelProto:
    """``rewritten`` refit on the calibration data when an .npz was given (``path``), the per-layer
    results stored under ``reconstruction`` in ``report_extra``; unchanged without one (seeded
    normal inputs are no data to fit to). ``prepare``: as for :func:`reconstruct`."""
    if path is None or not layers:
        return rewritten
    model, refits = reconstruct(original, rewritten, layers, calibration, prepare=prepare)
    report_extra["reconstruction"] = [refit.to_json() for refit in refits]
    return model


def describe_refits(report: dict) -> list:
    """Report lines of a ``reconstruction`` entry: each layer's calibration error before → after."""
    refits = report.get("reconstruction")
    if not refits:
        return []
    lines = [f"  least-squares reconstruction on {report['calibration_inputs']} calibration inputs (layer output error before → after):"]
    for refit in refits:
        before = "" if refit["error_before"] is None else f"{refit['error_before']:.3f}"
        after = "" if refit["error_after"] is None else f" → {refit['error_after']:.3f}"
        lines.append(f"    {refit['name']}: {before}{after}{(' (' + refit['skipped'] + ')') if refit['skipped'] else ''}")
    return lines
