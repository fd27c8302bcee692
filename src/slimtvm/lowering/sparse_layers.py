"""Sparse conv layers → direct sparse kernels, once layouts are final.

A conv with a constant weight (groups = 1, static shapes) whose zeros make it worth it — the
decision is :class:`SparseChoice`'s, per layer — becomes a ``call_tir`` of the direct sparse
kernel (schedules/sparse_conv.py) with the weight as CSR constants; no dense copy stays in the
module. The decision comes from a table measured per kind of conv, except near its thresholds,
where a target that runs on this machine gets both kernels timed (per-layer L1 pruning at 80%
puts every 3×3 conv of a ResNet exactly on the F(4×4) kernel's 80% threshold). Two moments: ConvertLayout asks :meth:`SparseLayers.layouts_for` (a sparse k×k conv keeps
plain NCHW, the kernel's own layout), then the layer lowering (lowering/binary_layers.py) asks
:meth:`SparseLayers.lower` about every float conv2d in graph order. The kernel reads and writes
whatever layouts the conv ended with, and is marked out-element-wise fusable: the bias,
batch-norm shift, residual add and activation after it fuse into it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..conv_geometry import ConvGeometry
from ..errors import first_line
from ..passes.constants import constant_value
from ..passes.detect_binary import channel_block, weight_as_oihw
from ..passes.detect_sparse import conv_weight_sparsity
from ..schedules.sparse_conv import sparse_conv2d_primfunc
from ..schedules.sparse_weights import SparseConvLayout, pack_sparse_conv_weight
from .layer_records import LayerRecord

# Zeros (in live channels) from which the sparse kernel beats slimtvm's dense one, by the form
# of its layout and kind of conv: benchmarks/sparse_layers.py on Zen 5 (AVX-512), 1 thread,
# sessions 10–11 (kernel timings, dense includes no relayout) — aligned k×k stride 1 (ResNet-18's
# 56/28/14 images, grouped taps since session 11): 1.36–1.66× at 50%, 4.5–4.9× at 90% (and, the
# sparse kernel alone timed against those dense kernel times, 1.09–1.31× at 30%, 1.20–1.48× at
# 40%); aligned strided: 0.92–1.04× at 50%, 1.16–1.19× at 60%, 3.8× at 90%; natural (the 7×7
# images, and every AVX2 layout): 0.59–0.64× at 50%, 0.98–1.05× at 70%, 2.7–2.8× at 90%. Each
# threshold leaves a margin for the relayouts a sparse layer between blocked dense ones costs. 1×1 (MobileNetV2's shapes): 0.67–1.17×
# at 90%; at 95–98% the expansions (out ≥ 2 × in channels: the input copy is small) 1.01–1.48×
# (MobileNetV2's 96→576 @14 and 160→960 @7), the projections still 0.7–0.9× (their large input
# is copied whole), so only expansions from 95% run sparse. A strided 1×1 expansion (ResNet's
# shortcut convs) copies a quarter of its input: session 23, Zen 4, 1 thread, one-layer models
# (relayouts included), 64→128 @56 / 128→256 @28 / 256→512 @14 at 80% zeros 1.02/1.10/1.16×, at
# 90% 1.08/1.45/1.70×, at 95% 1.09/1.41/2.30×; so from 90%. Those two rules remain for the natural
# layout (NEON). Since session 27 a 1×1 conv on x86 takes aligned channel planes (every load
# aligned: 1.15–2.6× faster kernels where a plane is not whole vectors, 14×14 and 7×7), and the
# rule is one (benchmarks/sparse_layers.py, Zen 4, 1 thread, kernels alone, 80 / 90 / 95% zeros):
# 96→576 @14 1.94/2.22/3.41×, 576→96 @14 1.52/1.98/2.49×, 160→960 @7 1.99/3.05/4.18×, 960→160 @7
# 1.37/2.17/2.92×, 32→192 @28 1.27/1.51/1.62×, ResNet's strided shortcuts 64→128 / 128→256 /
# 256→512 1.26–2.05 / 1.48–3.11 / 1.60–4.28×; but 192→32 @28 0.64/0.61/0.74× (32 outputs: the
# copy of its large input is shared by too few of them). So from 80% zeros with at least 64
# output channels. Small ones too (kernels alone, 80 / 90%): 64→128 @8 (0.5 M multiply-adds)
# 1.54/1.82×, 128→256 @7 1.62/2.27×, 32→192 @14 1.23/1.49×; not the tiniest: 16→64 @8 (65 K)
# 0.88/1.00×. The same table serves cross targets (aarch64: not measured; emulated timings mean
# nothing).
MIN_ZEROS_ALIGNED_STRIDE_1 = 0.4
MIN_ZEROS_ALIGNED_STRIDED = 0.65
MIN_ZEROS_NATURAL = 0.75
# The AVX2 build (8 lanes: natural layout), stride 1, where its dense kernel is the direct one (too
# few pixels for Winograd; since session 24 the others are Winograd's, below): session 23,
# `compile --target x86-64 --sparse timed` of the globally pruned ResNet-18 on Zen 4 (AVX2 code,
# kernels alone, 1 thread): 51% zeros 1.15×, 67% 1.52–1.59×, 83% 2.4× the dense kernel (strided:
# 67% 1.02×, 83% 2.1×, so they keep 75%). From 60%, a margin over the 51% point.
MIN_ZEROS_NATURAL_8_LANES = 0.6
MIN_ZEROS_POINTWISE_EXPANSION = 0.95
MIN_ZEROS_POINTWISE_STRIDED = 0.9
MIN_ZEROS_POINTWISE_ALIGNED = 0.8
MIN_POINTWISE_OUTPUTS = 64
MIN_POINTWISE_MACS = 250_000
# Where the dense alternative is the Winograd kernel (x86 targets, 3×3 stride 1, ≥ 49 output
# pixels; lowering/winograd_layers.py), 1.4–2× faster than the direct one, and never below the
# layout's own threshold (7×7 images take the natural layout). Sparse kernel against
# it (benchmarks/sparse_layers.py, Zen 5, 1 thread, kernels alone) at 50/60/70/80/90% zeros:
# l1 (64 @56) 1.12/1.28/1.58/2.06/3.27×, l2 (128 @28) 0.80/0.96/1.17/1.60/2.55×, l3 (256 @14)
# 0.68/0.84/1.01/1.38/2.28×.
MIN_ZEROS_AGAINST_WINOGRAD = 0.7
# Against Winograd F(4×4, 3×3) (images of 5 × 5 four-pixel tiles and more; 1.5–1.8× faster
# than F(2×2) on ResNet-18's 56×56 and 28×28 layers): benchmarks/sparse_layers.py, Zen 4,
# 1 thread, whole layers, at 70/80/90% zeros: l1 0.90/1.21/1.81×, l2 0.80/1.12/1.81×.
MIN_ZEROS_AGAINST_WINOGRAD_4X4 = 0.8
# Below this many dense multiply-adds the sparse kernel's fixed work (copying the padded input,
# writing the output) costs more than it saves: the tiny test ResNet (8–32 channels at 8×8, ≤ 0.3 M
# each) ran 1.8× slower with its convs sparse.
MIN_DENSE_MACS = 8_000_000
# where the kernel pays (table; timed near its thresholds) / timed wherever the kernel can run
# (a target this machine runs) / every conv it takes / none
SPARSE_MODES = ("auto", "timed", "always", "never")
# Near a threshold the table's margin is thin and another CPU may fall on the other side: a conv
# whose zeros lie this far below its threshold, or less far above it, is timed when the target
# runs here (``auto``). 5 points past a k×k conv's threshold the sparse kernel measured about
# 1.2–1.5× the dense one (10 past, F(4×4)'s 80% — where a layer pruned to 90% would straddle a
# symmetric band — 1.8×); 10 points under it 0.8–1.0× (the strided 1×1 shortcut convs 1.2–1.5×
# at 80% zeros, kernels alone). 12 below, not 10: pruning amounts and thresholds are round
# numbers, and a layer pruned to exactly 10 points under one would fall on either side of the edge
# by rounding. 1×1 convs with aligned planes are timed from 68% to 85% zeros, natural 1×1
# expansions from 83%.
TIMED_BELOW, TIMED_ABOVE = 0.12, 0.05
# A conv under this many dense multiply-adds per image is left to the table: its kernels take a
# few µs, within the noise of an instrumented run (a 1×1 expansion of the tiny test MobileNet).
MIN_TIMED_MACS = 2_000_000
# A timed conv runs sparse when its kernel is this much faster than the dense one: above the
# noise of a few instrumented runs, and a share of the relayouts a sparse k×k conv (plain NCHW)
# costs between blocked dense neighbours, which a one-layer timing does not see.
MEASURED_SPEEDUP = 1.05


@dataclass(frozen=True)
class SparseDecision:
    """Whether one conv runs the sparse kernel (``sparse``), the ``layout`` it would use, and
    ``why`` in words; for a timed conv both kernels' times (ms, one thread, on this machine)."""

    sparse: bool
    layout: SparseConvLayout | None
    why: str
    all_zero: bool = False  # no nonzero weight: the output is zeros, no kernel runs
    dense_ms: float | None = None
    sparse_ms: float | None = None
    table_sparse: bool | None = None  # for a timed conv: what the table would have chosen

    @property
    def timed(self) -> bool:
        return self.dense_ms is not None

    def times_text(self) -> str:
        """``"; timed: sparse 0.374 ms, dense 0.660 ms"`` for a timed conv, else empty."""
        return f"; timed: sparse {self.sparse_ms:.3f} ms, dense {self.dense_ms:.3f} ms" if self.timed else ""


class SparseChoice:
    """Chooses per layer between the sparse kernel and slimtvm's dense one.

    The rule (a table measured per layout form and kind of conv, see :data:`MIN_ZEROS_NATURAL`): a k×k conv runs
    sparse when enough of the weights of its live filters and input channels are zero (zero
    filters and zero input channels are structure — channel padding adds them — not what makes
    the sparse kernel pay); a 1×1 conv runs sparse only when it expands (at least twice as many
    outputs as inputs) with :data:`MIN_ZEROS_POINTWISE_EXPANSION` zeros (strided: :data:`MIN_ZEROS_POINTWISE_STRIDED`); a small conv
    (:data:`MIN_DENSE_MACS`) stays dense. With a ``timer``
    (slimtvm.compiler.layer_timing.conv_timer: the target runs on this machine), a conv whose
    zeros lie within the band around its threshold (:data:`TIMED_BELOW`, :data:`TIMED_ABOVE`; not tiny,
    :data:`MIN_TIMED_MACS`) is decided by timing both kernels on a one-conv model instead: sparse
    when its kernel is :data:`MEASURED_SPEEDUP` × faster; ``timed`` times every conv the kernel
    can run (not tiny) that way, whatever the table says.
    ``always`` takes every conv the kernel can run, ``never`` none; an all-zero weight becomes
    zeros unless ``never``. Keeps dense, with the reason, grouped convs and non-float32 ones."""

    def __init__(self, lanes: int, mode: str = "auto", winograd=None, timer=None, half_width_vectors: bool = False):
        self.lanes = lanes
        self.half_width_vectors = half_width_vectors  # KernelTarget.half_width_vectors
        self.mode = mode
        self.winograd = winograd  # WinogradLayers: whether the dense alternative is the Winograd kernel
        self.timer = timer if mode in ("auto", "timed") else None

    def decide(self, call, weight: np.ndarray, geometry: ConvGeometry, batch: int = 1) -> SparseDecision:
        """The decision for one conv2d ``call`` with OIHW ``weight`` on ``batch`` images."""
        if int(call.attrs.groups) != 1:
            return SparseDecision(False, None, "grouped conv (the sparse kernel has groups = 1)")
        if str(call.args[0].ty.dtype) != "float32" or weight.dtype != np.float32:
            return SparseDecision(False, None, "not float32 (the sparse kernel is fp32)")
        layout = SparseConvLayout.choose(
            geometry, weight.shape[1], weight.shape[0], self.lanes, zeros=unstructured_zeros(weight), half_width_blocks=self.half_width_vectors
        )
        if self.mode == "never":
            return SparseDecision(False, layout, "sparse kernels off (--sparse never)")
        if not weight.any():
            return SparseDecision(True, layout, "all weights zero (the output is zeros)", all_zero=True)
        if self.mode == "always":
            return SparseDecision(True, layout, "sparse kernels for every conv with zeros (--sparse always)")
        needed, kind = self._table_threshold(call, weight, geometry, layout)
        return self._verdict(weight, geometry, batch, layout, needed, kind)

    def _table_threshold(self, call, weight, geometry, layout) -> tuple:
        """(zeros from which the table runs the conv sparse, the kind of conv in words); None
        and the reason for a conv the table keeps dense at any sparsity."""
        if weight.shape[2:] == (1, 1) and layout.align:
            if weight.shape[0] < MIN_POINTWISE_OUTPUTS:
                return None, f"1×1 conv with fewer than {MIN_POINTWISE_OUTPUTS} output channels (copying its input costs more than the sparse kernel saves)"
            if weight.size * geometry.out_h * geometry.out_w < MIN_POINTWISE_MACS:
                return None, f"small 1×1 conv (under {MIN_POINTWISE_MACS / 1e3:.0f} K multiply-adds per image)"
            return MIN_ZEROS_POINTWISE_ALIGNED, "1×1 conv, aligned channel planes"
        if weight.shape[2:] == (1, 1):
            if weight.shape[0] < 2 * weight.shape[1]:
                return None, "1×1 conv that does not expand (the dense kernel measured faster at every sparsity)"
            if geometry.stride_h > 1 or geometry.stride_w > 1:
                return MIN_ZEROS_POINTWISE_STRIDED, "strided 1×1 expansion"
            return MIN_ZEROS_POINTWISE_EXPANSION, "1×1 expansion"
        macs = weight.size * geometry.out_h * geometry.out_w
        if macs < MIN_DENSE_MACS:
            return None, f"small conv (under {MIN_DENSE_MACS / 1e6:.0f} M multiply-adds per image)"
        strided = geometry.stride_h > 1 or geometry.stride_w > 1
        if layout.align:
            needed = MIN_ZEROS_ALIGNED_STRIDED if strided else MIN_ZEROS_ALIGNED_STRIDE_1
            kind = f"{'strided' if strided else 'stride-1'} conv, aligned layout"
        else:
            needed = MIN_ZEROS_NATURAL_8_LANES if self.lanes == 8 and not strided else MIN_ZEROS_NATURAL
            kind = f"{'strided' if strided else 'stride-1'} conv, natural layout"
        tile = None if self.winograd is None else self.winograd.output_tile(call)
        if tile is not None:  # never below the layout's own threshold
            natural = "" if layout.align else ", natural layout"
            against = MIN_ZEROS_AGAINST_WINOGRAD_4X4 if tile == 4 else MIN_ZEROS_AGAINST_WINOGRAD
            on = (
                "stride-2 conv whose dense kernel is Winograd's F({0}×{0}) on its input phases"
                if strided
                else "stride-1 3×3 conv whose dense kernel is Winograd's F({0}×{0})"
            )
            needed, kind = max(needed, against), on.format(tile) + natural
        return needed, kind

    def _verdict(self, weight, geometry, batch, layout, needed, kind: str) -> SparseDecision:
        """Sparse or dense for a conv the table puts at ``needed`` zeros (None: dense at any),
        timed near it — or always, in ``timed`` mode — when there is a timer (class doc)."""
        zeros = unstructured_zeros(weight)
        macs = weight.size * geometry.out_h * geometry.out_w
        table_sparse = needed is not None and zeros >= needed
        near = needed is not None and needed - TIMED_BELOW <= zeros < needed + TIMED_ABOVE
        failed = ""
        if self.timer is not None and macs >= MIN_TIMED_MACS and (near or self.mode == "timed"):
            try:
                dense_ms, sparse_ms = self.timer(weight.astype(np.float32), geometry, batch, [({"sparse": "never"}, False), ({"sparse": "always"}, True)])
            except Exception as err:  # noqa: BLE001 - a failed measurement leaves the choice to the table, and says so
                failed = f"; not timed: {type(err).__name__}: {first_line(err)}"
            else:
                # kept as the manifest stores them, so the plan's text and the report agree
                dense_ms, sparse_ms = round(dense_ms, 4), round(sparse_ms, 4)
                faster = sparse_ms * MEASURED_SPEEDUP <= dense_ms
                why = f"{'at least' if faster else 'less than'} {MEASURED_SPEEDUP:g}× faster than the dense kernel, timed here ({kind})"
                return SparseDecision(faster, layout, why, dense_ms=dense_ms, sparse_ms=sparse_ms, table_sparse=table_sparse)
        if needed is None:
            return SparseDecision(False, layout, kind + failed)
        if zeros < needed:
            return SparseDecision(False, layout, f"fewer than {100 * needed:.0f}% zero weights in its live channels ({kind}){failed}")
        return SparseDecision(True, layout, f"at least {100 * needed:.0f}% zero weights in its live channels ({kind}){failed}")


def unstructured_zeros(weight: np.ndarray) -> float:
    """The share of zeros among the weights of filters and input channels that are not all zero
    (1.0 for an all-zero weight)."""
    zero = weight == 0
    live_filters = ~zero.reshape(weight.shape[0], -1).all(axis=1)
    live_inputs = ~np.moveaxis(zero, 1, 0).reshape(weight.shape[1], -1).all(axis=1)
    live = zero[live_filters][:, live_inputs]
    return float(live.mean()) if live.size else 1.0


@dataclass
class SparseLoweringReport:
    """``layers``: per conv with zero weights, in graph order, its sparsity, kernel and why;
    ``sparse_count``: how many run the sparse kernel."""

    layers: list = field(default_factory=list)
    sparse_count: int = 0
    all_zero_count: int = 0

    def to_json(self) -> dict:
        timed = sum(1 for layer in self.layers if "dense_kernel_ms" in layer)
        return {"sparse_convs": self.sparse_count, "all_zero_convs": self.all_zero_count, "timed_convs": timed, "layers": list(self.layers)}


class SparseLayers:
    """The sparse lowering of one build. ConvertLayout asks :meth:`layouts_for` (sparse convs
    keep NCHW); the layer lowering (lowering/binary_layers.py) asks :meth:`lower` for every float
    conv2d, in graph order, once layouts are final. Decisions are made once per conv (keyed by
    its weight and geometry). ``report`` holds them after a run (reset by :meth:`start`)."""

    def __init__(self, lanes: int, mode: str = "auto", winograd=None, timer=None, half_width_vectors: bool = False):
        if mode not in SPARSE_MODES:
            raise ValueError(f"sparse mode {mode!r}: use one of {', '.join(SPARSE_MODES)}")
        self.choice = SparseChoice(lanes, mode, winograd, timer, half_width_vectors)
        self.report = SparseLoweringReport()
        self.decisions: dict = {}  # conv fingerprint -> SparseDecision

    def start(self) -> None:
        self.report = SparseLoweringReport()

    def layouts_for(self, call):
        """ConvertLayout's wish for a conv2d that will run sparse, else None: plain NCHW for a
        k×k conv (the sparse kernel's own layout; chains of them, as in a pruned ResNet, then
        run without relayouts), None — the blocked layout of its dense neighbours — for a 1×1
        conv (in a pruned MobileNet its neighbours are dense depthwise convs; relayouts around
        every sparse 1×1 conv cost more than reading and writing the blocks in the kernel)."""
        found = self._decision(call)
        if found is None or not found[2].sparse or found[2].all_zero or found[0].shape[2:] == (1, 1):
            return None
        return ["NCHW", "OIHW", "NCHW"]

    def _decision(self, call):
        """``(OIHW weight, sparsity, decision)`` for a conv2d with a constant weight with zeros
        in its live channels (or no nonzero at all) and static shapes, in any layout the
        lowering meets; None otherwise. Whole zero filters and input channels alone do not count:
        the channel padding adds them, and the graph pass reports the model's own."""
        if getattr(call.op, "name", "") != "relax.nn.conv2d":
            return None
        attrs = call.attrs
        weight = constant_value(call.args[1])
        if weight is None or weight.ndim not in (4, 5, 6):
            return None
        weight = weight_as_oihw(weight, str(attrs.kernel_layout))
        try:
            in_block, out_block = channel_block(str(attrs.data_layout)), channel_block(str(attrs.out_layout))
        except ValueError:
            return None
        shape = getattr(call.ty, "shape", None)
        if weight is None or shape is None or not all(isinstance(v, tvm.tirx.IntImm) for v in (*call.args[0].ty.shape, *shape)):
            return None
        if unstructured_zeros(weight) == 0:
            return None  # no zeros, or only whole zero filters / input channels (as channel padding adds)
        batch, _, height, width = _plain_shape([int(v) for v in call.args[0].ty.shape], in_block)
        _, _, out_h, out_w = _plain_shape([int(v) for v in shape], out_block)
        geometry = ConvGeometry.of(height, width, *weight.shape[2:], attrs.strides, attrs.padding, attrs.dilation)
        key = (hashlib.sha1(weight.tobytes()).hexdigest(), weight.shape, geometry, batch, int(attrs.groups), str(call.args[0].ty.dtype))
        if key not in self.decisions:
            self.decisions[key] = self.choice.decide(call, weight, geometry, batch)
        return weight, conv_weight_sparsity(weight, batch * out_h * out_w), self.decisions[key]

    def lower(self, builder, call, layer_op: str = "conv2d"):
        """``(kernel call, LayerRecord)`` for a conv2d that runs the sparse kernel (or is all
        zero); ``(None, note)`` for a conv with zeros that stays dense, the note saying why (for
        its record); None for a conv without zero weights. ``layer_op``: the model's layer the
        conv stands for (``matmul``: lowering/sparse_matmuls.py), in its report entry."""
        found = self._decision(call)
        if found is None:
            return None
        weight, sparsity, decision = found
        entry = {
            "op": layer_op,
            "shape": list(sparsity.shape),
            "zeros": round(sparsity.zeros, 4),
            "kernel": "none" if decision.all_zero else "sparse_conv2d" if decision.sparse else "dense",
            "why": decision.why,
        }
        if decision.timed:
            entry.update(dense_kernel_ms=decision.dense_ms, sparse_kernel_ms=decision.sparse_ms)
            entry["table_kernel"] = "sparse_conv2d" if decision.table_sparse else "dense"
        self.report.layers.append(entry)
        if not decision.sparse:
            return None, f"{100 * sparsity.zeros:.1f}% zeros, dense: {decision.why}{decision.times_text()}"
        out_shape = [int(v) for v in call.ty.shape]
        if decision.all_zero:  # exact for finite inputs (0 · NaN would be NaN)
            self.report.all_zero_count += 1
            return relax.op.zeros(out_shape, "float32"), LayerRecord("conv2d", "none", "all weights zero: the output is zeros, no kernel")
        attrs, layout = call.attrs, decision.layout
        in_block, out_block = channel_block(str(attrs.data_layout)), channel_block(str(attrs.out_layout))
        weights = pack_sparse_conv_weight(weight.astype(np.float32), layout)
        batch = _plain_shape([int(v) for v in call.args[0].ty.shape], in_block)[0]
        gvar = builder.add_func(sparse_conv2d_primfunc(layout, batch, in_block, out_block), "sparse_conv2d")
        self.report.sparse_count += 1
        record = LayerRecord(
            "conv2d",
            "sparse_conv2d",
            f"sparse ({100 * sparsity.zeros:.1f}% zeros, {weights.nonzeros} nonzeros), {layout.vector}-pixel blocks"
            f"{f', {layout.sums} aligned column sums' if layout.sums > 1 else ', aligned channel planes' if layout.align else ''}{f' ({layout.align}-lane vectors)' if 0 < layout.align < self.choice.lanes else ''}{' (grouped taps)' if layout.grouped else ''}{', prefetched' if layout.prefetch else ''}, {layout.chunks} input chunk(s)"
            f"{decision.times_text()}",
        )
        args = [call.args[0], *(relax.const(a) for a in (weights.values, weights.offsets, weights.row_ptr, weights.value_ptr))]
        return relax.call_tir(gvar, args, relax.TensorType(out_shape, "float32")), record


def _plain_shape(dims: list, block: int) -> tuple:
    """(N, C, H, W) of an NCHW shape or an NCHW[block]c one."""
    if block:
        return dims[0], dims[1] * dims[4], dims[2], dims[3]
    return tuple(dims)
