"""fp32 conv2d in the blocked NCHW[x]c layout: legalization (compute) and CPU schedule.

Compute: TOPI's ``conv2d_NCHWc`` (data ``[N, C/x, H, W, x]``, kernel ``OIHW[x]i[x]o``), reached by
Relax's ``ConvertLayout`` and then :func:`legalize_conv2d`.

Schedule: the classic direct convolution that TVM ≤ 0.19 used on x86. The output is computed in
register tiles of ``reg_n`` output columns × one ``oc_bn`` channel block. The tile is held in
``reg_n · oc_bn / lanes`` vector registers. The reduction runs over input-channel chunks, kernel
rows, the input-channel block and the (unrolled) kernel columns; each step broadcasts one input
value and multiplies it by a vector of weights. The tile loop ``n · oc_chunk · oh`` runs in
parallel. The fused epilogue (bias, ReLU, residual add, …) is applied to each tile while it is
still hot, and zero padding runs as its own parallel, vectorized stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, te, topi

from .cpu_rule import CPURule
from .stages import conv_output_hw, find_block, schedule_padding, split_stages
from .depthwise_nchwc import depthwise_conv2d_nchwc, is_depthwise

CONV_BLOCK = "conv2d_NCHWc"


def blocked_layouts(block: int) -> list:
    """ConvertLayout's desired [data, kernel, output] layouts for ``block`` channels per block."""
    return [f"NCHW{block}c", f"OIHW{block}i{block}o", f"NCHW{block}c"]


def blocked_layouts_for(call, block: int) -> dict:
    """ConvertLayout's callback: desired layouts for one call, by op name.

    Every conv2d goes to the blocked layout; a depthwise kernel blocks only its output channels.
    conv2d_transpose asks for plain NCHW: TVM's layout inference for it fails on blocked inputs
    ("Layouts must have the same size"). Other ops get no wish and follow their inputs' layouts.
    """
    name = getattr(call.op, "name", "")
    if name == "relax.nn.conv2d_transpose":
        return {name: ["NCHW", "IOHW", "NCHW"]}
    if name != "relax.nn.conv2d":
        return {}
    return {"relax.nn.conv2d": _conv_layouts(call, block)}


def _conv_layouts(call, block: int) -> list:
    kernel_shape = call.args[1].ty.shape
    groups = int(call.attrs.groups)
    out_channels, in_channels = int(kernel_shape[0]), int(kernel_shape[1])
    if groups > 1 and in_channels == 1 and out_channels == groups:
        return [f"NCHW{block}c", f"OIHW1i{block}o", f"NCHW{block}c"]
    if groups == 1 and in_channels % block != 0 and out_channels % block == 0:
        # An RGB stem: read the plain input, write blocked output (no padded input channels).
        return ["NCHW", f"OIHW{block}o", f"NCHW{block}c"]
    return blocked_layouts(block)


def legalize_conv2d(bb, call):
    """Legalize ``relax.nn.conv2d``: blocked layouts to TE, plain NCHW to TVM's default.

    A blocked conv with groups is computed as NCHW group conv between TE unpack/pack stages,
    because TOPI's conv2d_NCHWc has no groups.
    """
    attrs = call.attrs
    if len(attrs.data_layout) == 4 and len(attrs.out_layout) == 4:
        return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, call)
    out_dtype = str(attrs.out_dtype) if attrs.out_dtype is not None and str(attrs.out_dtype) not in ("", "void", "None") else str(call.args[0].ty.dtype)
    data_shape, kernel_shape = call.args[0].ty.shape, call.args[1].ty.shape
    if int(attrs.groups) > 1 and attrs.data_layout == attrs.out_layout and is_depthwise(data_shape, kernel_shape, int(attrs.groups)):
        padding = [int(v) for v in attrs.padding]
        return bb.call_te(
            depthwise_conv2d_nchwc,
            call.args[0],
            call.args[1],
            attrs.strides,
            padding,
            attrs.dilation,
            out_dtype,
            primfunc_name_hint="depthwise_conv2d_NCHWc",
        )
    if int(attrs.groups) == 1 and attrs.data_layout == "NCHW" and len(attrs.out_layout) > 4:
        return bb.call_te(
            plain_input_conv2d_nchwc,
            call.args[0],
            call.args[1],
            attrs.strides,
            [int(v) for v in attrs.padding],
            attrs.dilation,
            out_dtype,
            primfunc_name_hint="conv2d_NCHWc_plain_input",
        )
    if int(attrs.groups) == 1 and attrs.data_layout == attrs.out_layout:
        return bb.call_te(
            topi.nn.conv2d_NCHWc,
            call.args[0],
            call.args[1],
            attrs.strides,
            attrs.padding,
            attrs.dilation,
            attrs.data_layout,
            attrs.out_layout,
            out_dtype,
            primfunc_name_hint="conv2d_NCHWc",
        )
    return bb.call_te(
        _grouped_blocked_conv,
        call.args[0],
        call.args[1],
        attrs.strides,
        attrs.padding,
        attrs.dilation,
        int(attrs.groups),
        out_dtype,
        primfunc_name_hint="group_conv2d_blocked",
    )


def plain_input_conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype):
    """Conv from a plain NCHW input to NCHW[x]c output; kernel ``OIHW[x]o``, padding (t, l, b, r).

    The block is named like TOPI's conv2d_NCHWc and has the same iterators (n, oc_chunk, oh, ow,
    oc_block, ic, kh, kw), so the same register-tiled schedule and template apply. Made for RGB
    stems: each input value is broadcast against a vector of ``x`` output channels, as MLAS does,
    instead of padding 3 input channels to a block of 8.
    """
    n, channels, height, width = data.shape
    o_chunks, _, kh, kw, o_block = kernel.shape
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    top, left, bottom, right = (int(v) for v in padding)
    out_h, out_w = conv_output_hw(height, width, kh, kw, strides, padding, dilation)
    padded = data
    if top or left or bottom or right:
        padded = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="data_pad")
    ic = te.reduce_axis((0, channels), name="ic")
    ry = te.reduce_axis((0, kh), name="kh")
    rx = te.reduce_axis((0, kw), name="kw")
    return te.compute(
        (n, o_chunks, out_h, out_w, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, ic, y * sh + ry * dh, x * sw + rx * dw].astype(out_dtype) * kernel[oc, ic, ry, rx, ob].astype(out_dtype),
            axis=[ic, ry, rx],
        ),
        name=CONV_BLOCK,
    )


def _grouped_blocked_conv(data, kernel, strides, padding, dilation, groups, out_dtype):
    """NCHW[x]c grouped conv = unpack → TOPI group_conv2d_nchw → pack, in one TE graph."""
    n, c_chunks, h, w, c_block = data.shape
    o_chunks, i_chunks, kh, kw, i_block, o_block = kernel.shape
    plain_data = te.compute((n, c_chunks * c_block, h, w), lambda b, c, y, x: data[b, c // c_block, y, x, c % c_block], name="unpack_data")
    plain_kernel = te.compute(
        (o_chunks * o_block, i_chunks * i_block, kh, kw),
        lambda o, i, y, x: kernel[o // o_block, i // i_block, y, x, i % i_block, o % o_block],
        name="unpack_kernel",
    )
    out = topi.nn.group_conv2d_nchw(plain_data, plain_kernel, strides, padding, dilation, groups, out_dtype)
    on, oc, oh, ow = out.shape
    return te.compute((on, oc // o_block, oh, ow, o_block), lambda b, c, y, x, cb: out[b, c * o_block + cb, y, x], name="pack_output")


@dataclass(frozen=True)
class ConvTile:
    """A register tile: ``oc_tile`` channel blocks × ``reg_h`` output rows × ``reg_n`` columns."""

    oc_tile: int
    reg_h: int
    reg_n: int


def accumulator_budget(lanes: int) -> int:
    """Channel-block accumulators a tile may hold: 12 of 16 ymm (AVX2), 12 × 2 of 32 q (NEON,
    8-channel blocks), 24 of 32 zmm (AVX-512); the rest hold the broadcast input and weights."""
    return 24 if lanes >= 16 else 12


def default_tile(oc_chunks: int, out_h: int, out_w: int, budget: int = 12) -> ConvTile:
    """The untuned tile: as many channel blocks as divide ``oc_chunks`` (4, else 6, 3, 2, 1), and
    the rest of the accumulator budget along a row or a column.

    Measured on this machine (Zen 2, AVX2, 1 thread) with ``benchmarks/conv_layers.py --sweep``
    over ResNet and MobileNetV2 shapes: 12-accumulator tiles reach 45–51 G MAC/s, 8-accumulator
    ones 38–40, 7 columns × 1 block 32–35. A 4 × 3 tile leaves a 1-column tail when
    ``out_w % 3 == 1``, and then LLVM's code for it measured half as fast as the 3-row shape,
    which is chosen instead.
    """
    oc_tile = next(t for t in (4, 6, 3, 2, 1) if oc_chunks % t == 0 and t <= budget)
    spatial = max(1, budget // oc_tile)
    if spatial == 3 and out_w >= 3:  # 4 × 3 with a tail (45–51 G MAC/s) beats 4 × 2 (38–40)
        return ConvTile(oc_tile, 3, 1) if out_w % 3 == 1 and out_h >= 3 else ConvTile(oc_tile, 1, 3)
    reg_n = max(d for d in range(1, min(spatial, out_w) + 1) if out_w % d == 0)
    if reg_n < spatial // 2 and out_w > reg_n:  # no good divisor: a tail tile beats tiny tiles
        reg_n = min(spatial, out_w)
    reg_h = max(d for d in range(1, max(1, spatial // reg_n) + 1) if out_h % d == 0)
    return ConvTile(oc_tile, reg_h, reg_n)


def schedule_conv2d_nchwc(sch: s_tir.Schedule, oc_tile=1, reg_h=1, reg_n=1) -> None:
    """Apply the register-tiled schedule to the fused PrimFunc in ``sch`` (see module docstring).

    The register tile is ``oc_tile`` channel blocks × ``reg_h`` output rows × ``reg_n`` output
    columns. Each factor is an int (the default schedule) or a random variable sampled by
    MetaSchedule (the tunable template): the instructions issued do not depend on the values,
    so a MetaSchedule trace can be replayed with other decisions.
    """
    stages = split_stages(sch, CONV_BLOCK)
    conv, out = stages.main, stages.out

    n, oc_chunk, oh, ow, oc_block = sch.get_loops(out)
    oc_outer, oc_inner = sch.split(oc_chunk, [None, oc_tile])
    oh_outer, oh_inner = sch.split(oh, [None, reg_h])
    ow_outer, ow_inner = sch.split(ow, [None, reg_n])
    sch.reorder(n, oc_outer, oh_outer, ow_outer, oc_inner, oh_inner, ow_inner, oc_block)
    sch.parallel(sch.fuse(n, oc_outer, oh_outer))
    sch.vectorize(oc_block)
    sch.compute_at(conv, ow_outer, preserve_unit_loops=True)

    # Below ow_outer: batch, oc_inner, oh, ow, oc_block, ic, kh, kw (unit loops are kept).
    tile_oc, tile_h, tile_w, vec, ic, kh, kw = sch.get_loops(conv)[-7:]
    # ic runs over every input channel; blocked inputs split it into chunks of one channel block
    # (a plain-input stem, whose channels are not a multiple of the block, is one chunk).
    ic_bn = int(sch.get(vec).extent)
    if int(sch.get(ic).extent) % ic_bn:
        ic_bn = int(sch.get(ic).extent)
    ic_outer, ic_inner = sch.split(ic, [None, ic_bn])
    sch.reorder(ic_outer, kh, ic_inner, kw, tile_oc, tile_h, tile_w, vec)
    for loop in (kw, tile_oc, tile_h, tile_w):
        sch.unroll(loop)
    sch.vectorize(vec)
    sch.decompose_reduction(conv, ic_outer)
    schedule_padding(sch, stages.pads)


class Conv2dNCHWc(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is TOPI's conv2d_NCHWc."""

    def schedule(self, sch):
        block = find_block(sch, CONV_BLOCK)
        if block is None:
            return None
        _, oc_chunks, out_h, out_w = (int(sch.get(loop).extent) for loop in sch.get_loops(block)[:4])
        tile = default_tile(oc_chunks, out_h, out_w, accumulator_budget(self.lanes))
        schedule_conv2d_nchwc(sch, tile.oc_tile, tile.reg_h, tile.reg_n)
        return sch
