"""Grouped convolutions (1 < groups, not depthwise) → one conv per group on a slice of the input
channels, concatenated: ``conv(x, W, g)`` is exactly ``concat_i conv(x[:, C_i], W[O_i])``.

slimtvm's conv kernels take groups = 1 and depthwise convs; any other grouped conv ran TVM's
generic compute (a plain loop nest, or for blocked layouts an unpack / group conv / pack), which
for ShuffleNet v1's group-4 1×1 convs (light zoo, 272 → 272 channels at 14×14) cost milliseconds
per call: the whole model ran 52 ms at 1 thread where onnxruntime takes 2.3 ms. Each group's
conv is an ordinary conv that the layout, padding and kernel choices after this pass treat like
any other. Only convs of at most :data:`MAX_GROUPS` groups with a constant weight and static
shapes are split (the slices of the weight are constants here); the rest keep the generic path,
named in ``compile``'s kernel line.

On x86 targets (8 or 16 fp32 lanes) a 1×1 stride-1 conv whose groups do not fill whole channel
blocks of the target (ShuffleNet v1's 34, 68, 136 channels) becomes instead one conv with block-
diagonal weights, which the banded kernel runs in the blocked layout skipping the zero blocks
(lowering/banded_layers.py, schedules/banded_conv.py). Split, each group's conv read a plain
NCHW slice of the channels and its output went back through a relayout, a slice and a concat:
light ShuffleNet v1 2.56–2.75 → 1.74–1.81 ms at 1 thread, 1.86 → 1.03 ms at 2 (Zen 5, with the channel-permutation kernel; benchmarks/compare_builds.py). Where the banded kernel does not take such a
conv after all, its record says that it ran dense (:meth:`SplitGroupedConvs.records_per_layer`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import BinarizeReport, BinaryLayerMatcher, op_name
from .layer_records import LayerRecord

# Convs of more groups stay whole: ResNeXt's 32 groups of 4 channels would become 32 convs each
# padded to a 16-channel block (16× the multiply-adds) and 32 kernel calls. ShuffleNet v1 has 3,
# 4 or 8 groups, AlexNet 2.
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

    def transform_module(self, mod, _ctx):
        self.pieces, self.block_diagonal = [], set()
        splitter = _Splitter(mod, BinarizeReport(), self.pieces, self.block_diagonal, self.lanes)
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
    def __init__(self, mod, report, pieces: list, block_diagonal: set, lanes: int):
        super().__init__(mod, report)
        self.pieces = pieces
        self.block_diagonal = block_diagonal
        self.lanes = lanes

    def binary_conv(self, call, source, weight, alpha, layouts, levels, padding):
        self.pieces.append(1)
        return super().binary_conv(call, source, weight, alpha, layouts, levels, padding)

    def float_layer(self, call, reason):
        if reason is None and _unaligned_pointwise(call, self.lanes):
            self.block_diagonal.add(len(self.pieces))
            self.pieces.append(1)
            return _block_diagonal(call)
        split = _split(self.builder_, call) if reason is None else None
        if op_name(call) == "relax.nn.conv2d":
            self.pieces.append(1 if split is None else int(call.attrs.groups))
        return super().float_layer(call, reason) if split is None else split


BLOCK_DIAGONAL_LANES = (8, 16)  # the targets whose banded kernel runs them (lowering/banded_layers.py)


def _unaligned_pointwise(call, lanes: int) -> bool:
    """Whether ``call`` is a grouped (not depthwise) 1×1 stride-1 unpadded conv, at most
    :data:`MAX_GROUPS` groups, constant weight, static shapes, whose groups' input or output
    channels are not whole blocks of ``lanes`` (8 or 16): one for the banded kernel."""
    if lanes not in BLOCK_DIAGONAL_LANES or op_name(call) != "relax.nn.conv2d":
        return False
    attrs = call.attrs
    groups = int(attrs.groups)
    weight = constant_value(call.args[1])
    if (
        groups == 1
        or groups > MAX_GROUPS
        or weight is None
        or weight.shape[2:] != (1, 1)
        or str(attrs.data_layout) != "NCHW"
        or str(attrs.kernel_layout) != "OIHW"
    ):
        return False
    if [int(v) for v in attrs.strides] != [1, 1] or [int(v) for v in attrs.padding] != [0, 0, 0, 0]:
        return False
    shape = call.args[0].ty.shape
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return False
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if in_per_group == 1 and out_channels == groups:
        return False
    return bool(in_per_group % lanes or (out_channels // groups) % lanes)


def _block_diagonal(call):
    """``call`` as one conv (groups = 1) whose weight is the groups' weights on the diagonal,
    zero elsewhere: the same sums, each with the other groups' channels times 0 added."""
    attrs = call.attrs
    weight = constant_value(call.args[1])
    groups = int(attrs.groups)
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    out_per_group = out_channels // groups
    dense = np.zeros((out_channels, in_per_group * groups, 1, 1), dtype=weight.dtype)
    for group in range(groups):
        dense[group * out_per_group : (group + 1) * out_per_group, group * in_per_group : (group + 1) * in_per_group] = weight[
            group * out_per_group : (group + 1) * out_per_group
        ]
    return relax.op.nn.conv2d(
        call.args[0],
        relax.const(dense, str(weight.dtype)),
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
        conv = relax.op.nn.conv2d(
            builder.normalize(channels),
            group_weight,
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=1,
            data_layout="NCHW",
            kernel_layout="OIHW",
            out_layout=str(attrs.out_layout),
            out_dtype=attrs.out_dtype,
        )
        pieces.append(builder.normalize(conv))
    return relax.op.concat(pieces, axis=1)
