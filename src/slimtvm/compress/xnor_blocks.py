"""XNOR-Net block order for ``--binarize weights+activations`` (Rastegari et al. 2016).

A float network reads each layer's input after ``BN → ReLU (→ MaxPool)``: every value is ≥ 0 and a
binarizer there sees +1 almost everywhere. XNOR-Net orders a binary block ``BNorm → BinActiv →
BinConv → Pool``: the binarizer sees a centred, normalised input and max-pooling acts on real
values. For each binarized layer this rewrite walks back from its input through ReLUs and
max-pools to the BatchNormalization before them (if any) and feeds the layer from a new path:

    source ─ MaxPool (the pools found, in order) ─ BN (a copy of the one found) ─ binarizer ─ layer

where ``source`` is the BN's input (the previous conv's real-valued output) — the pools move
before the BN, onto real values — and the ReLUs go. Where no BN precedes (a residual sum, the
graph input), a per-channel affine ``BN(γ=1, β=0, mean=0, var=1−ε)`` stands in its place. The
original nodes stay for their other readers (residual paths stay float, as in Bi-Real Net) and
are dropped when nothing reads them any more.

With calibration data, each new BN's β is then shifted so that its output's per-channel median on
the calibration inputs becomes 0 (ReActNet's learned RSign shift, set from data: a bit is +1 and
−1 equally often, the most information it can carry), layer by layer in graph order, interleaved
with the least-squares refit of the layers (slimtvm.compress.reconstruction), so that each median
sees the binarized and refit layers before it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .lossy_error import onnxruntime_runs
from .weight_layers import layer_name

MOVED = ("MaxPool",)  # re-applied onto the real values, before the BN
WALKED_THROUGH = ("Relu",) + MOVED
BN_EPSILON = 1e-5
TIE_TOLERANCE = 1e-4  # relative: values this close are one value computed with different rounding


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(init for init in model.graph.initializer if init.name == name))


def xnor_input(model: onnx.ModelProto, node, channels: int) -> tuple:
    """(new nodes, name of the affine's β initializer, the affine's output): the path feeding
    ``node``'s binarizer in XNOR-Net order (see module doc); ``channels``: its input channels.
    Adds initializers to ``model``; the caller appends the binarizer and inserts the nodes before
    ``node``."""
    producers = {out: n for n in model.graph.node for out in n.output}
    prefix = f"{layer_name(node)}/xnor"
    pools, source = [], node.input[0]
    while source in producers and producers[source].op_type in WALKED_THROUGH:
        if producers[source].op_type in MOVED:
            pools.append(producers[source])
        source = producers[source].input[0]
    bn = producers.get(source)
    if bn is not None and bn.op_type == "BatchNormalization" and all(name in {i.name for i in model.graph.initializer} for name in bn.input[1:5]):
        params = [_initializer(model, name).astype(np.float32) for name in bn.input[1:5]]
        epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), BN_EPSILON)
        source = bn.input[0]
    else:
        params = [np.ones(channels, np.float32), np.zeros(channels, np.float32), np.zeros(channels, np.float32), np.full(channels, 1 - BN_EPSILON, np.float32)]
        epsilon = BN_EPSILON
    nodes = []
    for index, pool in enumerate(reversed(pools)):  # innermost first
        out = f"{prefix}/moved{index}"
        moved = helper.make_node(pool.op_type, [source], [out], name=out)
        moved.attribute.extend(pool.attribute)
        nodes.append(moved)
        source = out
    names = []
    for role, values in zip(("scale", "shift", "mean", "var"), params):
        names.append(f"{prefix}/{role}")
        model.graph.initializer.append(numpy_helper.from_array(values, names[-1]))
    out = f"{prefix}/normalised"
    nodes.append(helper.make_node("BatchNormalization", [source, *names], [out], name=out, epsilon=epsilon))
    return nodes, names[1], out


def drop_unread_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is read (by a node or as a graph output), repeatedly,
    and initializers nothing reads."""
    while True:
        read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        kept = [n for n in model.graph.node if any(out in read for out in n.output)]
        if len(kept) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(kept)
    read = {name for n in model.graph.node for name in n.input}
    inits = [init for init in model.graph.initializer if init.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _midpoint_thresholds(channels: np.ndarray) -> np.ndarray:
    """Per row, a threshold in the middle of the first gap ending above the median that is wider
    than the row's rounding tolerance (:data:`TIE_TOLERANCE` of its largest magnitude): it splits the data at
    the median without lying on a value (a row of one value gets a threshold well below it).
    Binary layers write a lattice of values, each lattice point computed with its own float
    rounding: a threshold on or within rounding of a point would leave values whose sign depends
    on each engine's summation order."""
    ordered = np.sort(channels, axis=1)
    tolerance = TIE_TOLERANCE * np.maximum(np.abs(ordered).max(axis=1, keepdims=True), 1e-30)
    median = np.median(ordered, axis=1, keepdims=True)
    wide = np.diff(ordered, axis=1) > tolerance  # the gap after each value
    candidates = np.where(wide & (ordered[:, 1:] > median + tolerance), 0, 1)
    first = np.argmin(candidates, axis=1)  # the first wide gap ending above the median
    rows = np.arange(ordered.shape[0])
    found = candidates[rows, first] == 0
    threshold = (ordered[rows, first] + ordered[rows, first + 1]) / 2
    margin = np.maximum(np.abs(ordered[:, -1]), 1.0)
    return np.where(found, threshold, ordered[:, 0] - margin).astype(np.float32)


def centre_binarizer_input(model: onnx.ModelProto, beta_name: str, output: str, calibration: list) -> float:
    """Shift an affine's β (initializer ``beta_name``) so that its ``output`` is split at its
    per-channel median on ``calibration`` (see :func:`_midpoint_thresholds`); returns the largest
    shift."""
    values = np.concatenate([run[output] for run in onnxruntime_runs(model, calibration, [output], "--calibration")])
    thresholds = _midpoint_thresholds(np.moveaxis(values, 1, 0).reshape(values.shape[1], -1))
    init = next(i for i in model.graph.initializer if i.name == beta_name)
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) - thresholds).astype(np.float32), beta_name))
    return float(np.abs(thresholds).max())
