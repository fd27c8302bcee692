"""Grouped convolutions (1 < groups, not depthwise) → one conv per group on a slice of the input
channels, concatenated: ``conv(x, W, g)`` is exactly ``concat_i conv(x[:, C_i], W[O_i])``.

slimtvm's conv kernels take groups = 1 and depthwise convs; any other grouped conv ran TVM's
generic compute (a plain loop nest, or for blocked layouts an unpack / group conv / pack), which
for ShuffleNet v1's group-4 1×1 convs (light zoo, 272 → 272 channels at 14×14) cost milliseconds
per call: the whole model ran 52 ms at 1 thread where onnxruntime takes 2.3 ms. Each group's
conv is an ordinary conv that the layout, padding and kernel choices after this pass treat like
any other. Only convs of at most :data:`MAX_GROUPS` groups with a constant weight and static
shapes are split (the slices of the weight are constants here); the rest, where the banded
kernel below does not take them (a NEON target, weights that are not constants), keep the
generic path, named in ``compile``'s kernel line.

On x86 targets (8 or 16 fp32 lanes) a grouped conv becomes instead one conv with block-diagonal
weights, which the banded kernel runs in the blocked layout skipping the zero channels outside
each output tile's band (lowering/banded_layers.py, schedules/banded_conv.py), where that band is
at most half a dense conv's multiply-adds. Split, each of ShuffleNet v1's group convs (1×1 convs
of 34, 68, 136 channels per group) read a plain NCHW slice of the channels and its output went
back through a relayout, a slice and a concat: light ShuffleNet v1 2.56–2.75 → 1.74–1.81 ms at 1
thread, 1.86 → 1.03 ms at 2 (Zen 5, with the channel-permutation kernel;
benchmarks/compare_builds.py). Groups that fill whole channel blocks were still split until
session 39: each group's slice was a copy (a channel-permutation kernel) and the pieces a concat,
which in RegNetX-400MF's first stages (2 and 4 groups of 16 channels at 56×56 and 28×28) cost
more than the convs (its first block's grouped conv 334 µs as two copies, two convs and a concat
against onnxruntime's 217 µs; banded 238; RegNetX-400MF 5.02 → 4.94 ms at 1 thread and 3.02 →
2.92 ms at 2, Emerald Rapids, benchmarks/compare_builds.py). Where the banded kernel does not take
such a conv after all (a band of more than half: groups narrower than a block, two to a block),
it is split as above, or, when split would not apply either, its record says that it ran dense
(:meth:`SplitGroupedConvs.records_per_layer`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import BinarizeReport, BinaryLayerMatcher, op_name
from .banded_layers import BANDED_LANES, MAX_MULTIPLY_ADD_FRACTION, band_fraction
from .layer_records import LayerRecord

# Convs of more groups are not split: ResNeXt's 32 groups of 4 channels would become 32 convs each
# padded to a 16-channel block (16× the multiply-adds) and 32 kernel calls; the banded kernel
# takes them (above). ShuffleNet v1 has 3, 4 or 8 groups, AlexNet 2.
MAX_GROUPS = 8


@tvm.transform.module_pass(opt_level=0, name="slimtvm.SplitGroupedConvs")
class SplitGroupedConvs:
    """Module pass: every qualifying grouped ``relax.nn.conv2d`` in NCHW that no binarizer feeds
    → per-group convs and a concat on the channel axis (the conv's own attributes otherwise), or
    one block-diagonal conv (module docstring; ``lanes``: the target's fp32 lanes).
    Binary layers are left to the binary lowering (the same recognition,
    :class:`BinaryLayerMatcher`): its grouped kernel takes them whole. After a run, ``pieces``
    holds, per conv2d in graph order, how many convs it became (1: left whole), which
    :meth:`records_per_layer` uses to give each model conv one record again."""

    def __init__(self, lanes: int = 0):
        self.lanes = lanes  # the target's fp32 lanes: 8 or 16 make unaligned 1×1 groups block diagonal
        self.pieces: list = []
        self.block_diagonal: set = set()  # indices into ``pieces`` of convs made block diagonal
        self.block_diagonal_weights: list = []  # their OIHW weights, which the banded lowering looks for

    def transform_module(self, mod, _ctx):
        self.pieces, self.block_diagonal, self.block_diagonal_weights = [], set(), []
        splitter = _Splitter(mod, BinarizeReport(), self.pieces, self.block_diagonal, self.lanes, self.block_diagonal_weights)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = splitter.visit_function(func)
        return relax.transform.Normalize()(mod)

    def records_per_layer(self, records: list) -> list:
        """``records`` (the lowering's, one per conv2d/matmul it saw) with the records of one
        split conv's per-group convs merged into one. Unchanged when the conv2d records do not
        number what the split produced (a pass in between added or removed convs)."""
        convs = [index for index, record in enumerate(records) if record.op == "conv2d"]
        if sum(self.pieces) != len(convs) or (all(count == 1 for count in self.pieces) and not self.block_diagonal):
            return records
        merged, position = {}, 0
        for piece, count in enumerate(self.pieces):
            group = [records[index] for index in convs[position : position + count]]
            plans = sorted({record.plan for record in group})
            plan = group[0].plan if count == 1 else f"{'; '.join(plans)}, one conv per group ({count} groups)"
            if piece in self.block_diagonal and group[0].kernel != "banded_conv2d":
                plan = f"{plan}; a grouped conv run dense on block-diagonal weights (the banded kernel did not take it)"
            merged[convs[position]] = LayerRecord("conv2d", group[0].kernel, plan)
            merged.update({index: None for index in convs[position + 1 : position + count]})
            position += count
        return [merged.get(index, record) for index, record in enumerate(records) if merged.get(index, record) is not None]


@relax.expr_functor.mutator
class _Splitter(BinaryLayerMatcher):
    def __init__(self, mod, report, pieces: list, block_diagonal: set, lanes: int, weights: list):
        super().__init__(mod, report)
        self.pieces = pieces
        self.block_diagonal = block_diagonal
        self.lanes = lanes
        self.weights = weights

    def binary_conv(self, call, source, weight, alpha, layouts, levels, padding):
        self.pieces.append(1)
        return super().binary_conv(call, source, weight, alpha, layouts, levels, padding)

    def float_layer(self, call, reason):
        if reason is None and _banded_candidate(call, self.lanes):
            self.block_diagonal.add(len(self.pieces))
            self.pieces.append(1)
            conv = _block_diagonal(call)
            self.weights.append(constant_value(conv.args[1]))
            return conv
        split = _split(self.builder_, call) if reason is None else None
        if op_name(call) == "relax.nn.conv2d":
            self.pieces.append(1 if split is None else int(call.attrs.groups))
        return super().float_layer(call, reason) if split is None else split


def _banded_candidate(call, lanes: int) -> bool:
    """Whether ``call`` is a grouped (not depthwise) conv with a constant float32 weight and static
    shapes, on a target of ``lanes`` (8 or 16) fp32 lanes, whose block-diagonal weights' band is
    one the banded kernel takes (:func:`~slimtvm.lowering.banded_layers.band_fraction`)."""
    if lanes not in BANDED_LANES or op_name(call) != "relax.nn.conv2d":
        return False
    attrs = call.attrs
    groups = int(attrs.groups)
    weight = constant_value(call.args[1])
    if (
        groups == 1
        or weight is None
        or weight.dtype != np.float32
        or weight.ndim != 4
        or str(attrs.data_layout) != "NCHW"
        or str(attrs.kernel_layout) != "OIHW"
    ):
        return False
    shape = call.args[0].ty.shape
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return False
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if in_per_group == 1 and out_channels == groups:
        return False
    return band_fraction(_block_diagonal_weight(weight, groups), lanes) <= MAX_MULTIPLY_ADD_FRACTION


def _block_diagonal_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's OIHW ``weight`` (``[O, I/groups, KH, KW]``) as a groups = 1 weight whose
    groups' weights are on the diagonal, zero elsewhere."""
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    dense = np.zeros((out_channels, in_per_group * groups, *weight.shape[2:]), dtype=weight.dtype)
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        dense[rows, group * in_per_group : (group + 1) * in_per_group] = weight[rows]
    return dense


def _block_diagonal(call):
    """``call`` as one conv (groups = 1) whose weight is the groups' weights on the diagonal,
    zero elsewhere: the same sums, each with the other groups' channels times 0 added."""
    weight = constant_value(call.args[1])
    return _ungrouped_conv(call, call.args[0], relax.const(_block_diagonal_weight(weight, int(call.attrs.groups)), str(weight.dtype)))


def _ungrouped_conv(call, data, weight):
    """A groups = 1 NCHW / OIHW conv2d of ``data`` and ``weight`` with ``call``'s other attributes."""
    attrs = call.attrs
    return relax.op.nn.conv2d(
        data,
        weight,
        strides=attrs.strides,
        padding=attrs.padding,
        dilation=attrs.dilation,
        groups=1,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout=str(attrs.out_layout),
        out_dtype=attrs.out_dtype,
    )


def _split(builder, call):
    if op_name(call) != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    groups = int(attrs.groups)
    weight = constant_value(call.args[1])
    if groups == 1 or weight is None or str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return None
    shape = call.args[0].ty.shape
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if in_per_group == 1 and out_channels == groups:  # depthwise: a kernel of its own
        return None
    if groups > MAX_GROUPS:
        return None
    out_per_group = out_channels // groups
    data = call.args[0]
    pieces = []
    for group in range(groups):
        channels = relax.op.strided_slice(data, axes=[1], begin=[group * in_per_group], end=[(group + 1) * in_per_group])
        group_weight = relax.const(np.ascontiguousarray(weight[group * out_per_group : (group + 1) * out_per_group]), str(weight.dtype))
        pieces.append(builder.normalize(_ungrouped_conv(call, builder.normalize(channels), group_weight)))
    return relax.op.concat(pieces, axis=1)
