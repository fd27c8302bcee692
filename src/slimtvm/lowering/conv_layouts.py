"""Convolution layouts and legalization: which layout each conv2d gets, and which compute.

1. :func:`convert_layout_or_keep`: Relax's ``ConvertLayout`` with slimtvm's wishes
   (:func:`blocked_layouts_for`): every conv2d to the blocked NCHW[x]c layout (x = the target's
   channel block), a depthwise kernel blocked on its output channels only, an RGB stem reading
   plain NCHW. Layout transforms appear only where the graph leaves that layout.
2. :func:`legalize_conv2d`: each conv2d call (in the layouts ConvertLayout gave it) becomes the
   compute that :func:`conv_kernel_for` names — slimtvm's blocked conv, plain-input conv or
   depthwise conv (schedules/), or TVM's generic compute where no slimtvm kernel applies. The
   lowering writes each float conv's per-layer record from that same function
   (lowering/binary_layers.py), so ``inspect`` and the manifest say what the legalization did.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import tvm
from tvm import relax, topi

from ..errors import first_line
from ..passes.constants import constant_value
from ..schedules.conv2d_nchwc import blocked_conv2d_nchwc, grouped_conv2d_blocked, plain_input_conv2d_nchwc, used_input_channels
from ..schedules.depthwise_nchwc import depthwise_conv2d_nchwc, is_depthwise
from ..schedules.split_reduction_conv import PARTS, split_reduction_primfunc
from ..schedules.stages import spatial_partition
from ..targets.kernel_target import MIN_CHANNEL_BLOCK as MIN_BLOCK
from .te_placeholders import te_placeholder


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


def model_channel_block(mod, block: int) -> int:
    """The target's ``block``, or 8 for the whole model when some conv's output channels are a
    multiple of 8 but not of ``block`` (16 on AVX-512): such a conv would otherwise stay NCHW on
    TVM's generic schedule, and ConvertLayout cannot join 8- and 16-channel blocks in one graph
    ("Invalid layout axis 16b"), so the block is chosen per model, not per conv. Runs after
    lowering/pad_channels.py, which pads such convs to 16·k channels where it can (constant
    weights); this is the fallback for the rest."""
    if block <= MIN_BLOCK:
        return block
    for func in mod.functions.values():
        if not isinstance(func, relax.Function):
            continue
        for binding_block in func.body.blocks:
            for binding in binding_block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.nn.conv2d":
                    out_channels = int(value.args[1].ty.shape[0])
                    if out_channels % block and out_channels % MIN_BLOCK == 0:
                        return MIN_BLOCK
    return block


def convert_layout_or_keep(block: int, layouts_for_call=blocked_layouts_for) -> tvm.transform.Pass:
    """Relax's ConvertLayout with ``layouts_for_call(call, block)``'s wishes (``block`` as
    :func:`model_channel_block` chooses it for the module), or — if it fails inside TVM on some
    graph — the module unchanged.

    ConvertLayout is an optimisation: without it every kernel stays in NCHW and takes the generic
    schedules, slower but exact. A warning names TVM's complaint.
    """

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.ConvertLayoutOrKeep")
    def _convert(mod, _ctx):
        try:
            chosen = model_channel_block(mod, block)
            return relax.transform.ConvertLayout({}, lambda call: layouts_for_call(call, chosen))(mod)
        except Exception as err:  # noqa: BLE001 - TVM InternalError; fall back to plain layouts
            warnings.warn(f"blocked layouts not applied (TVM ConvertLayout failed: {first_line(err)}); kernels stay in NCHW", stacklevel=2)
            return mod

    return _convert


@dataclass(frozen=True)
class ConvKernel:
    """The compute a float conv2d call is legalized to: a kernel family of the registry
    (``conv2d``, ``depthwise``) or ``generic`` (TVM's compute and slimtvm's generic schedule),
    and a description for people."""

    family: str
    description: str


def conv_kernel_for(call) -> ConvKernel:
    """Which compute :func:`legalize_conv2d` gives this (layout-converted) conv2d call."""
    attrs = call.attrs
    data_layout, out_layout = str(attrs.data_layout), str(attrs.out_layout)
    groups = int(attrs.groups)
    if len(data_layout) == 4 and len(out_layout) == 4:
        return ConvKernel("generic", f"fp32 conv, {data_layout} (not blocked), generic schedule")
    if groups > 1 and data_layout == out_layout and is_depthwise(call.args[0].ty.shape, call.args[1].ty.shape, groups):
        return ConvKernel("depthwise", f"fp32 depthwise conv, {out_layout} kernel")
    if groups == 1 and data_layout == "NCHW":
        return ConvKernel("conv2d", f"fp32 conv, plain NCHW input → {out_layout} kernel")
    if groups == 1 and data_layout == out_layout:
        if splits_its_reduction(call) and _used_input_channels(call) is None:
            return ConvKernel("split_reduction_conv2d", f"fp32 1×1 conv, blocked {out_layout} kernel, input channels summed in two halves")
        return ConvKernel("conv2d", f"fp32 conv, blocked {out_layout} kernel")
    return ConvKernel("generic", f"fp32 grouped conv, {out_layout}, generic schedule")


def _used_input_channels(call):
    """For a blocked conv2d (groups 1) with a constant float weight whose last input channels'
    weights are all zero (channels padded to the block): how many input channels to reduce
    over; None when every channel is used or the weight is not a constant."""
    if int(call.attrs.groups) != 1 or len(str(call.attrs.kernel_layout)) <= 4:
        return None
    weight = constant_value(call.args[1])
    if weight is None or weight.ndim != 6:
        return None
    used = used_input_channels(weight)
    return used if used < weight.shape[1] * weight.shape[4] else None


SPLIT_MIN_INPUT_BYTES = 96 * 1024  # 31–63 KB of input lost 4.5 µs at 2 threads, 113–188 KB 17–24 µs
SPLIT_MAX_WIDTH = 7  # ResNet-50's 1×1 convs at 14 × 14 ran 0.94–1.36× their direct kernel's time split (1 and 2 threads)
# 16-channel blocks (AVX-512): the 2 × 7 register tile. With 8-channel blocks (AVX2, NEON) the
# tile is 1 × 7 and MobileNetV2's split projections ran 1.35–1.37× their direct kernel's time at
# 1 thread, the same at 2 (AVX2 build on Emerald Rapids, session 51)
SPLIT_MIN_BLOCK = 16
SPLIT_MAX_WEIGHT_BYTES = 1024 * 1024  # heavier convs keep the direct kernel's weight prefetch (960 → 320: 1.2 MB ran 1.23× slower at 1 thread split)


def splits_its_reduction(call) -> bool:
    """Whether a blocked conv2d runs as schedules/split_reduction_conv.py's kernel: 1×1, stride 1,
    no padding, groups 1, batch 1, float32, blocks of :data:`SPLIT_MIN_BLOCK` channels or more,
    an image at most :data:`SPLIT_MAX_WIDTH` wide, input
    channel blocks that split in two, at least :data:`SPLIT_MIN_INPUT_BYTES` of input, at most
    :data:`SPLIT_MAX_WEIGHT_BYTES` of weights, and weights that outweigh the activations (so that the direct kernel would run channel groups outermost
    and every core read the whole input)."""
    attrs = call.attrs
    try:
        data = [int(v) for v in call.args[0].ty.shape]
        weight = [int(v) for v in call.args[1].ty.shape]
        out = [int(v) for v in call.ty.shape]
    except (TypeError, ValueError, AttributeError):
        return False
    if (
        len(data) != 5
        or len(weight) != 6
        or weight[2:4] != [1, 1]
        or {str(call.args[0].ty.dtype), str(call.args[1].ty.dtype), str(call.ty.dtype)} != {"float32"}
    ):
        return False
    if [int(v) for v in attrs.strides] != [1, 1] or any(int(v) for v in attrs.padding) or [int(v) for v in attrs.dilation] != [1, 1]:
        return False
    if int(attrs.groups) != 1 or data[0] != 1 or out[3] > SPLIT_MAX_WIDTH or data[1] % PARTS or data[4] < SPLIT_MIN_BLOCK:
        return False
    input_bytes = 4 * data[1] * data[2] * data[3] * data[4]
    weight_bytes = 4 * weight[0] * weight[1] * weight[4] * weight[5]
    activation_bytes = input_bytes + 4 * out[1] * out[2] * out[3] * out[4]
    if input_bytes < SPLIT_MIN_INPUT_BYTES or weight_bytes > SPLIT_MAX_WEIGHT_BYTES:
        return False
    return not spatial_partition(out[2] * out[3], weight_bytes, activation_bytes, max_pixels=None)


def legalize_conv2d(bb, call):
    """Legalize ``relax.nn.conv2d`` to the compute :func:`conv_kernel_for` names: plain NCHW to
    TVM's default; a blocked conv with groups as NCHW group conv between TE unpack/pack stages,
    because TOPI's conv2d_NCHWc has no groups."""
    attrs = call.attrs
    kernel = conv_kernel_for(call)
    if kernel.family == "generic" and len(attrs.data_layout) == 4:
        return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, call)
    out_dtype = str(attrs.out_dtype) if attrs.out_dtype is not None and str(attrs.out_dtype) not in ("", "void", "None") else str(call.args[0].ty.dtype)
    data, weight, padding = call.args[0], call.args[1], [int(v) for v in attrs.padding]
    if kernel.family == "depthwise":
        return bb.call_te(depthwise_conv2d_nchwc, data, weight, attrs.strides, padding, attrs.dilation, out_dtype, primfunc_name_hint="depthwise_conv2d_NCHWc")
    if kernel.family == "conv2d" and attrs.data_layout == "NCHW":
        return bb.call_te(
            plain_input_conv2d_nchwc, data, weight, attrs.strides, padding, attrs.dilation, out_dtype, primfunc_name_hint="conv2d_NCHWc_plain_input"
        )
    if kernel.family == "split_reduction_conv2d":
        func = split_reduction_primfunc(te_placeholder(call.args[0].ty, "data"), te_placeholder(call.args[1].ty, "kernel"))
        gvar = bb.add_func(func, "conv2d_NCHWc_split")
        return relax.call_tir(gvar, [data, weight], relax.TensorType([int(v) for v in call.ty.shape], out_dtype))
    used = _used_input_channels(call) if kernel.family == "conv2d" else None
    if used is not None:  # trailing input channels with zero weights left out of the sum
        return bb.call_te(blocked_conv2d_nchwc, data, weight, attrs.strides, padding, attrs.dilation, out_dtype, used, primfunc_name_hint="conv2d_NCHWc")
    if kernel.family == "conv2d":
        return bb.call_te(
            topi.nn.conv2d_NCHWc,
            data,
            weight,
            attrs.strides,
            attrs.padding,
            attrs.dilation,
            attrs.data_layout,
            attrs.out_layout,
            out_dtype,
            primfunc_name_hint="conv2d_NCHWc",
        )
    return bb.call_te(
        grouped_conv2d_blocked,
        data,
        weight,
        attrs.strides,
        attrs.padding,
        attrs.dilation,
        int(attrs.groups),
        out_dtype,
        primfunc_name_hint="group_conv2d_blocked",
    )
