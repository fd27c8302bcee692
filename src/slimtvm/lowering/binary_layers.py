"""Binarized layers → binary kernels, in the layouts ConvertLayout chose.

Runs after ConvertLayout and constant folding, with the recognition of
:mod:`slimtvm.passes.detect_binary` (the same :class:`BinaryLayerMatcher`, so what is lowered is
exactly what was detected). The kernels read and write NCHW or NCHW[b]c, so the float ops
around them (batch norm, residual adds) stay in the blocked layout and fuse into their
epilogue. Weights in OIHW[b]o / OIHW[b]i[b]o are read back as OIHW and packed into the layouts
the kernels read (schedules/binary_weights.py): sign bytes, or nibbles for the AVX2 table
popcount when the target wants it.

Between two binary convs, BN → [MaxPool] → Sign becomes integer thresholds in the producer,
which then writes the consumer's packed input (lowering/binary_thresholds.py). A conv whose
only reader is a relayout to NCHW writes NCHW itself.

Every conv2d and matmul visited also gets a :class:`LayerRecord` (binary or float, and which
kernel), in graph order: the float ones are asked of lowering/conv_layouts.py, which legalizes
them next.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.detect_binary import BinarizeReport, BinaryLayerMatcher, op_name, visit_relax_functions
from ..passes.static_shapes import static_shape
from ..schedules.binary_conv_compute import binary_conv2d_packed, binary_conv2d_to_bits
from ..schedules.binary_grouped_conv_and_dense import binary_conv2d_nchw, binary_dense
from ..schedules.binary_weights import pack_conv_weight_bytes, pack_weight_signs, padding_corrections, split_weight_nibbles
from ..schedules.dense import GEMM_MIN_ROWS
from .binary_thresholds import PackedConv, threshold_plan, use_counts
from .conv_layouts import conv_kernel_for
from .layer_records import LayerRecord
from .sparse_matmuls import lower_sparse_matmul


def _plain_layout_transforms(func) -> dict:
    """var -> var of a binding ``layout_transform(var)`` from NCHW[b]c (5-D) to NCHW (4-D)."""
    found = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if op_name(value) == "relax.layout_transform":
                source = value.args[0]
                if isinstance(source, relax.Var) and len(source.ty.shape) == 5 and len(binding.var.ty.shape) == 4:
                    found[source] = binding.var
    return found


def _layout_name(block: int) -> str:
    return f"NCHW{block}c" if block else "NCHW"


def matmul_kernel_for(call) -> tuple[str, str]:
    """(family, plan) of a float ``matmul``: the dense family for static shapes of two or more
    axes each (the GEMM form for many rows or batch axes, schedules/dense.py), TVM's generic
    schedule otherwise (a vector operand, symbolic shapes)."""
    dims = [static_shape(arg) for arg in call.args]
    if any(shape is None or len(shape) < 2 for shape in dims):
        return "generic", "fp32 matmul of a vector or of a symbolic shape, generic schedule"
    if len(dims[0]) > 2 or len(dims[1]) > 2 or dims[0][-2] >= GEMM_MIN_ROWS:
        return "dense", "fp32 matmul, GEMM kernel (register tiles)"
    return "dense", "fp32 dense kernel"


@relax.expr_functor.mutator
class _BinaryLowering(BinaryLayerMatcher):
    """The matcher whose hooks emit binary kernels and record every linear layer."""

    def __init__(
        self,
        mod,
        report: BinarizeReport,
        records: list,
        popcount_tables: bool,
        sparse,
        winograd=None,
        banded=None,
        packed_matmuls=None,
        depthwise_projections=None,
    ):
        super().__init__(mod, report)
        self.depthwise_projections = depthwise_projections  # DepthwiseProjections: a depthwise conv and the 1×1 conv after it, one kernel
        self.depthwise_records: dict = {}  # a depthwise conv's var -> the index of its record
        self.packed_matmuls = packed_matmuls  # PackedMatmuls: float matmuls by a constant weight, GEMM form
        self.records = records
        self.banded = banded  # BandedLayers: 1×1 convs whose weights are zero outside a band (grouped convs)
        self.sparse = sparse  # SparseLayers: float convs with enough zero weights become sparse kernels
        self.winograd = winograd  # WinogradLayers: dense 3×3 stride-1 convs it takes
        self.popcount_tables = popcount_tables
        self.uses: dict = {}  # var -> readers, of the function being rewritten
        self.packed_convs: dict = {}  # PrimFunc name -> PackedConv, for threshold fusion

    def visit_function(self, func):
        self.uses = use_counts(func)
        self.to_plain = _plain_layout_transforms(func)  # conv var -> its only reader, a relayout to NCHW
        self.plain_outputs = {}  # that reader's var -> the kernel's NCHW result
        self.binding_var = None
        return super().visit_function(func)

    def visit_var_binding_(self, binding):
        if binding.var in self.plain_outputs:  # the kernel already wrote NCHW: no relayout
            self.set_var_remap(binding.var, self.plain_outputs[binding.var])
            return
        self.binding_var, self.wrote_plain = binding.var, False
        super().visit_var_binding_(binding)
        if self.wrote_plain:
            self.plain_outputs[self.to_plain[binding.var]] = self.get_var_remap(binding.var)
        self.binding_var = None

    # ------------------------------------------------------------------ hooks

    def float_layer(self, call, reason):
        sparse_note = None
        if op_name(call) == "relax.nn.conv2d" and self.banded is not None:
            lowered = self.banded.lower(self.builder_, call)
            if lowered is not None:
                return self._lowered_float(*lowered, reason)
        if op_name(call) == "relax.nn.conv2d" and self.sparse is not None:
            lowered = self.sparse.lower(self.builder_, call)
            if lowered is not None and lowered[0] is not None:
                return self._lowered_float(*lowered, reason)
            sparse_note = lowered[1] if lowered is not None else None
        if op_name(call) == "relax.matmul" and self.sparse is not None:
            lowered = lower_sparse_matmul(self.builder_, call, self.sparse, self.lookup_binding)
            if lowered is not None and lowered[0] is not None:
                return self._lowered_float(*lowered, reason)
            sparse_note = lowered[1] if lowered is not None else None
        if op_name(call) == "relax.nn.conv2d" and self.winograd is not None:
            lowered = self.winograd.lower(self.builder_, call)
            if lowered is not None:
                return self._lowered_float(*lowered, reason, sparse_note)
        if op_name(call) == "relax.matmul" and self.packed_matmuls is not None:
            lowered = self.packed_matmuls.lower(self.builder_, call)
            if lowered is not None:
                return self._lowered_float(*lowered, reason, sparse_note)
        if op_name(call) == "relax.nn.conv2d":
            kernel = conv_kernel_for(call)
            family, plan = kernel.family, kernel.description
            if family == "conv2d" and self.depthwise_projections is not None:
                pair = self.depthwise_projections.match(call, self.lookup_binding, self.uses)
                if pair is not None and pair.depthwise_var in self.depthwise_records:
                    kernel_call, record, depthwise_record = self.depthwise_projections.lower(self.builder_, pair)
                    self.records[self.depthwise_records[pair.depthwise_var]] = depthwise_record
                    return self._lowered_float(kernel_call, record, reason, sparse_note)
            if family == "depthwise" and self.binding_var is not None:
                self.depthwise_records[self.binding_var] = len(self.records)
        else:
            family, plan = matmul_kernel_for(call)
        if reason is not None:
            plan = f"stays float: {reason}; {plan}"
        if sparse_note is not None:
            plan = f"{plan} ({sparse_note})"
        self.records.append(LayerRecord(_record_op(call), family, plan))
        return call

    def _lowered_float(self, kernel_call, record, reason, note=None):
        """Record a float layer another lowering took (with why it stays float, and the sparse
        choice's note) and return its kernel call."""
        if reason is not None:
            record.plan = f"stays float: {reason}; {record.plan}"
        if note is not None:
            record.plan = f"{record.plan} ({note})"
        self.records.append(record)
        return kernel_call

    def binary_conv(self, call, source, weight, alpha, layouts, levels, padding):
        attrs = call.attrs
        if int(attrs.groups) == 1:
            return self._packed_conv(call, source, weight, alpha, *layouts, levels, padding)
        out_channels, per_group, kh, kw = weight.shape
        rows = np.transpose(weight, (0, 2, 3, 1)).reshape(-1, per_group)  # [O·KH·KW, C/g]
        packed = pack_weight_signs(rows).reshape(out_channels, kh, kw, -1).transpose(0, 3, 1, 2).copy()
        self.records.append(
            LayerRecord(
                "conv2d", "binary_grouped_conv2d", f"binary (XNOR + popcount, grouped conv in 32-bit words), groups = {int(attrs.groups)}, generic schedule"
            )
        )
        return self.builder_.call_te(
            binary_conv2d_nchw,
            source,
            relax.const(packed, "uint32"),
            relax.const(alpha, "float32"),
            per_group,
            [int(v) for v in attrs.strides],
            list(padding.pads),  # zero padding only: InputPadding refuses other values for grouped convs
            [int(v) for v in attrs.dilation],
            int(attrs.groups),
            *layouts,
            primfunc_name_hint="binary_conv2d",
        )

    def binary_dense(self, call, source, weight, alpha):
        self.records.append(LayerRecord("matmul", "binary_dense", "binary (XNOR + popcount, dense in 32-bit words), generic schedule"))
        return self.builder_.call_te(
            binary_dense,
            source,
            relax.const(pack_weight_signs(weight.T), "uint32"),
            relax.const(alpha, "float32"),
            int(weight.shape[0]),
            primfunc_name_hint="binary_dense",
        )

    # ------------------------------------------------------------------ the packed conv

    def _packed_conv(self, call, source, weight, alpha, in_block, out_block, levels, padding):
        attrs = call.attrs
        weight_bytes, tap_sums = pack_conv_weight_bytes(weight, padding.value)
        shape = [int(d) for d in source.ty.shape]
        conv = PackedConv(
            source,
            weight_bytes,
            tap_sums,
            alpha,
            int(weight.shape[1]),
            (shape[2], shape[3]),
            [int(v) for v in attrs.strides],
            list(padding.pads),
            [int(v) for v in attrs.dilation],
            in_block,
            out_block,
            levels,
        )
        activations = "sign bits" if levels == 1 else f"{int(levels).bit_length()}-bit unipolar activations"
        record = LayerRecord(
            "conv2d", "binary_conv2d", f"binary (XNOR + popcount: {activations} of {self.form} × ±α weights, {self._popcount_form()}), {padding.describe()}"
        )
        if levels > 1 and self.step:
            conv.step, conv.alpha = self.step, (alpha * np.float32(self.step)).astype(np.float32)
            self.report.multibit_convs += 1
        elif levels > 1:
            conv.alpha = (alpha / np.float32(levels)).astype(np.float32)
            self.report.multibit_convs += 1
        plan = None if levels > 1 else threshold_plan(self.lookup_binding, self.uses, call.args[0], source, self.packed_convs)
        if plan is not None:
            conv.source = self.builder_.emit(self._bits_from(plan, conv), "sign_bits")
            self.report.fused_thresholds += 1
            self.report.or_pools += int(bool(plan.pool))
            plan.producer.record.plan += ", writes packed bits (BN → Sign as integer thresholds" + (", max-pool as OR)" if plan.pool else ")")
            record.plan += ", reads packed bits"
        reader = self.to_plain.get(self.binding_var)
        if out_block and reader is not None and self.uses.get(self.binding_var, 0) == 1:
            conv.out_block, self.wrote_plain = 0, True  # write NCHW for the relayout that reads it
        if plan is None:
            record.plan += f", {_layout_name(conv.in_block)} in"
        record.plan += f", {_layout_name(conv.out_block)} out"
        conv.record = record
        self.records.append(record)
        lowered = self._emit_packed(conv)
        self.packed_convs[lowered.args[0].name_hint] = conv
        return lowered

    def _popcount_form(self) -> str:
        return "AVX2 table popcount" if self.popcount_tables else "byte popcount"

    def _emit_packed(self, conv: PackedConv):
        return self.builder_.call_te(
            binary_conv2d_packed,
            conv.source,
            relax.const(self._kernel_weights(conv.weight_bytes), "uint8"),
            relax.const(conv.alpha, "float32"),
            _corrections(conv),
            conv.channels,
            list(conv.image_hw),
            conv.strides,
            conv.padding,
            conv.dilation,
            conv.in_block,
            conv.out_block,
            conv.levels,
            conv.step,
            primfunc_name_hint="binary_conv2d",
        )

    def _kernel_weights(self, weight_bytes: np.ndarray) -> np.ndarray:
        """The packed conv's weights as its kernel reads them: bytes, or nibbles for AVX2 tables."""
        return split_weight_nibbles(weight_bytes) if self.popcount_tables else weight_bytes

    def _bits_from(self, plan, consumer: PackedConv):
        """The producer of ``plan`` again, writing ``consumer``'s packed, zero-padded input."""
        producer = plan.producer
        channel_bytes = consumer.weight_bytes.shape[2]
        geometry = consumer.geometry
        rows, cols = geometry.window
        next_conv = [int(channel_bytes), rows, cols, geometry.top, geometry.left]
        return self.builder_.call_te(
            binary_conv2d_to_bits,
            producer.source,
            relax.const(self._kernel_weights(producer.weight_bytes), "uint8"),
            _corrections(producer),
            relax.const(plan.flip, "int32"),
            relax.const(plan.threshold, "int32"),
            producer.channels,
            producer.out_channels,
            list(producer.image_hw),
            producer.strides,
            producer.padding,
            producer.dilation,
            producer.in_block,
            list(plan.pool),
            next_conv,
            producer.levels,
            producer.step,
            primfunc_name_hint="binary_conv2d_bits",
        )


def _corrections(conv: PackedConv):
    """The conv's padding corrections per border class (binary_weights.padding_corrections), a constant."""
    corrections = padding_corrections(conv.tap_sums, conv.geometry)
    return relax.const(corrections, str(corrections.dtype))


def _record_op(call) -> str:
    return "conv2d" if op_name(call) == "relax.nn.conv2d" else "matmul"


@tvm.transform.module_pass(opt_level=0, name="slimtvm.LowerBinaryLayers")
class LowerBinaryLayers:
    """Kernel pass (after ConvertLayout and constant folding): binarized layers become binary
    kernels (module docstring); ``popcount_tables``: pack conv weights as nibbles for the AVX2
    table popcount; ``sparse`` (a :class:`~slimtvm.lowering.sparse_layers.SparseLayers`): asked
    about every float conv, which it may turn into a sparse kernel (:func:`slimtvm.targets.presets.popcount_by_table` says when a target wants
    it); ``winograd`` (a :class:`~slimtvm.lowering.winograd_layers.WinogradLayers`): asked about
    every float conv left dense; ``banded`` (a :class:`~slimtvm.lowering.banded_layers.BandedLayers`):
    asked first, about every float conv; ``packed_matmuls`` (a
    :class:`~slimtvm.lowering.packed_matmuls.PackedMatmuls`): asked about every float matmul the
    sparse lowering left dense. After a run, ``report`` holds the counts and ``records`` one
    :class:`LayerRecord` per conv2d/matmul in graph order."""

    def __init__(self, popcount_tables: bool = False, sparse=None, winograd=None, banded=None, packed_matmuls=None, depthwise_projections=None):
        self.popcount_tables = popcount_tables
        self.depthwise_projections = depthwise_projections
        self.packed_matmuls = packed_matmuls
        self.sparse = sparse
        self.winograd = winograd
        self.banded = banded
        self.report = BinarizeReport()
        self.records: list = []

    def transform_module(self, mod, _ctx):
        self.report, self.records = BinarizeReport(), []
        for layers in (self.sparse, self.winograd, self.banded, self.packed_matmuls, self.depthwise_projections):
            if layers is not None:
                layers.start()
        lowering = _BinaryLowering(
            mod, self.report, self.records, self.popcount_tables, self.sparse, self.winograd, self.banded, self.packed_matmuls, self.depthwise_projections
        )
        mod = visit_relax_functions(mod, lowering)
        lowered_float = (
            (self.sparse is not None and self.sparse.report.sparse_count)
            or (self.winograd is not None and self.winograd.count)
            or (self.banded is not None and self.banded.count)
            or (self.packed_matmuls is not None and self.packed_matmuls.count)
            or (self.depthwise_projections is not None and self.depthwise_projections.count)
        )
        if self.report.binary_convs or self.report.binary_dense or lowered_float:
            mod = relax.transform.DeadCodeElimination()(mod)
        return mod

    def blocks_report(self) -> dict:
        """The manifest entry for the binary lowering and the fusion between binary layers."""
        return {
            "binary_convs_lowered": self.report.binary_convs,
            "binary_dense_lowered": self.report.binary_dense,
            "k_bit_activation_convs": self.report.multibit_convs,
            "thresholds_fused": self.report.fused_thresholds,
            "max_pools_on_bits": self.report.or_pools,
        }
