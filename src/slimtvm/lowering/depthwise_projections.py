"""A depthwise conv and the 1×1 conv that alone reads it → one kernel (schedules/depthwise_projection.py).

Asked by the layer lowering (lowering/binary_layers.py) about every float 1×1 conv that keeps the
direct conv kernel, once layouts are final. It takes the conv, with the depthwise conv that
feeds it, when all of these hold:

- the 1×1 conv: blocked NCHW[x]c in and out (x = the target's channel block), float32, 1×1
  weights ``OIHW[x]i[x]o``, stride 1, no padding, groups 1;
- its input is, through element-wise steps each read by nothing else (``add`` of a constant
  per-channel or scalar, ``maximum`` / ``minimum`` with a scalar constant, ReLU), the result of
  a depthwise conv (multiplier 1) in the same blocked layout, float32, read by nothing else;
- a strided depthwise conv reads at most :data:`MAX_STRIDED_INPUT_PIXELS` pixels per image;
- the depthwise output has at least :data:`MIN_FUSED_PIXELS` pixels per image.

The depthwise conv, its steps and the 1×1 conv become one call, marked out-element-wise
fusable, so the 1×1 conv's bias, residual add and activation still fuse after it. The depthwise
conv's bindings are left unread for dead-code elimination. Exact: the same products in the same
order as the two kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from ..passes.constants import constant_value
from ..passes.static_shapes import static_shape
from ..schedules.depthwise_nchwc import is_depthwise
from ..schedules.depthwise_projection import ElementwiseStep, depthwise_projection_primfunc
from .layer_records import LayerRecord
from .te_placeholders import te_placeholder

# Below this, pieces of at least 7 pixels of each output row make fewer than 64 parallel chunks
# (14 × 14: 28), and the depthwise output (MobileNetV2's 14 × 14 × 384: 300 KB) stays in the
# core's L2 between the two kernels anyway (not measured fused).
MIN_FUSED_PIXELS = 28 * 28
# Each chunk reads a few rows of every channel plane of the depthwise input. From a large image
# written just before (MobileNetV2's 96 × 112 × 112 expansion, 4.8 MB) that is too many short
# streams at once: the 112 → 56 stride-2 pair took 370 µs fused against 149 + 174 as two kernels
# (Zen 4, 1 thread, in the model); 56 → 28 (144 channels) 107 / 59 µs at 1 / 2 threads against
# 56 + 65 / 34 + 34. Stride-1 pairs gain at every size measured (see schedules/depthwise_projection.py).
MAX_STRIDED_INPUT_PIXELS = 56 * 56
STEP_NAMES = {"relax.add": "add", "relax.maximum": "maximum", "relax.minimum": "minimum", "relax.nn.relu": "maximum"}


def _name(expr) -> str:
    return getattr(expr.op, "name", "") if isinstance(expr, relax.Call) else ""


def _blocked(layout: str, block: int) -> bool:
    return layout == f"NCHW{block}c"


@dataclass(frozen=True)
class FusedPair:
    """A 1×1 conv call (``projection``) and what feeds it: ``depthwise_var`` bound to the
    ``depthwise`` conv call, then ``steps`` (in graph order) with their per-channel ``constants``."""

    projection: relax.Call
    depthwise_var: relax.Var
    depthwise: relax.Call
    steps: tuple
    constants: tuple


class DepthwiseProjections:
    """The fusion of one build for a target whose conv layout uses ``block``-channel blocks;
    ``count`` says how many pairs it fused (reset by :meth:`start`)."""

    def __init__(self, block: int):
        self.block = block
        self.count = 0

    def start(self) -> None:
        self.count = 0

    def match(self, call, lookup_binding, uses: dict):
        """The :class:`FusedPair` for a 1×1 conv the module docstring fuses with the depthwise
        conv before it, else None."""
        if not self._projection(call):
            return None
        found = self._depthwise_before(call.args[0], lookup_binding, uses)
        return None if found is None else FusedPair(call, *found)

    def lower(self, builder, pair: FusedPair):
        """``(kernel call, LayerRecord of the 1×1 conv, LayerRecord of the depthwise conv)`` for a
        :meth:`match`."""
        depthwise, call = pair.depthwise, pair.projection
        attrs = depthwise.attrs
        data_type, dw_type, pw_type = depthwise.args[0].ty, depthwise.args[1].ty, call.args[1].ty
        func = depthwise_projection_primfunc(
            te_placeholder(data_type, "data"),
            te_placeholder(dw_type, "dw_weight"),
            [te_placeholder(c.ty, f"step_constant{i}") for i, c in enumerate(pair.constants)],
            te_placeholder(pw_type, "pw_weight"),
            pair.steps,
            [int(v) for v in attrs.strides],
            [int(v) for v in attrs.padding],
            [int(v) for v in attrs.dilation],
        )
        gvar = builder.add_func(func, "depthwise_projection")
        self.count += 1
        kh, kw = int(dw_type.shape[2]), int(dw_type.shape[3])
        plan = f"fp32 {kh}×{kw} depthwise conv and the 1×1 conv after it as one kernel, NCHW{self.block}c"
        out = relax.TensorType([int(v) for v in call.ty.shape], "float32")
        kernel_call = relax.call_tir(gvar, [depthwise.args[0], depthwise.args[1], *pair.constants, call.args[1]], out)
        return kernel_call, LayerRecord("conv2d", "depthwise_projection", plan), LayerRecord("conv2d", "depthwise_projection", plan)

    def _projection(self, call) -> bool:
        if _name(call) != "relax.nn.conv2d":
            return False
        attrs = call.attrs
        if not (_blocked(str(attrs.data_layout), self.block) and _blocked(str(attrs.out_layout), self.block)):
            return False
        if int(attrs.groups) != 1 or [int(v) for v in attrs.strides] != [1, 1] or any(int(v) for v in attrs.padding):
            return False
        if str(attrs.kernel_layout) != f"OIHW{self.block}i{self.block}o" or static_shape(call, "float32") is None:
            return False
        weight = static_shape(call.args[1], "float32")
        return weight is not None and len(weight) == 6 and weight[2:4] == [1, 1]

    def _depthwise_before(self, var, lookup_binding, uses: dict):
        """``(depthwise var, depthwise call, steps, step constants)`` when ``var`` is a depthwise
        conv's result through element-wise steps, each read only by the next; else None."""
        steps, constants = [], []
        while True:
            if not isinstance(var, relax.Var) or uses.get(var, 0) != 1:
                return None
            bound = lookup_binding(var)
            name = _name(bound)
            if name in STEP_NAMES:
                step = self._step(bound, name)
                if step is None:
                    return None
                source, element_step, constant = step
                steps.append(element_step)
                if constant is not None:
                    constants.append(constant)
                var = source
                continue
            if name != "relax.nn.conv2d" or not self._depthwise(bound):
                return None
            return var, bound, tuple(steps[::-1]), tuple(constants[::-1])

    def _step(self, call, name: str):
        """``(source, ElementwiseStep, per-channel constant or None)`` for a step the kernel
        applies, else None."""
        if name == "relax.nn.relu":
            return call.args[0], ElementwiseStep("maximum", 0.0), None
        source, operand = call.args
        if constant_value(source) is not None:  # c + x, max(c, x), min(c, x): commutative
            source, operand = operand, source
        value, shape = constant_value(operand), static_shape(source, "float32")
        if value is None or value.dtype != np.float32 or shape is None or len(shape) != 5 or static_shape(call) != shape:
            return None
        if value.size == 1:
            return source, ElementwiseStep(STEP_NAMES[name], float(value.reshape(-1)[0])), None
        if name != "relax.add" or list(value.shape) != [1, shape[1], 1, 1, shape[4]]:
            return None
        return source, ElementwiseStep("add"), operand

    def _depthwise(self, call) -> bool:
        attrs = call.attrs
        if not (_blocked(str(attrs.data_layout), self.block) and _blocked(str(attrs.out_layout), self.block)):
            return False
        data, weight, out = (static_shape(expr, "float32") for expr in (call.args[0], call.args[1], call))
        if data is None or weight is None or out is None or len(data) != 5 or len(weight) != 6:
            return False
        if not is_depthwise(data, weight, int(attrs.groups)):
            return False
        if [int(v) for v in attrs.strides] != [1, 1] and data[2] * data[3] > MAX_STRIDED_INPUT_PIXELS:
            return False
        return out[2] * out[3] >= MIN_FUSED_PIXELS
