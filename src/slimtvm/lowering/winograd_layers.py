"""Dense 3×3 stride-1 convs → the Winograd F(2×2, 3×3) or F(4×4, 3×3) kernel, and stride-2 stems on
at most 4 input channels → Winograd on their input phases (schedules/winograd_conv.py).

Asked by the layer lowering (lowering/binary_layers.py) about every float conv2d the sparse
lowering left dense, once layouts are final. A conv takes the Winograd kernel when all of these
hold, else it keeps the direct kernel (conv2d_nchwc.py) and the reason is not recorded (it is
the default):

- the target has 16 (AVX-512) or 8 (AVX2) fp32 lanes; the kernel runs in that channel block.
  The AVX2 build measured on Zen 4 running AVX2 code (session 24: ResNet-18 37.4 → 20.7 ms at 1
  thread), not yet on an AVX2-only host. NEON's direct kernels stay until one is measured there;
- blocked NCHW[x]c in and out, a constant float32 weight, 3×3, stride 1, dilation 1, padding
  1 on every side, groups 1, static shapes;
- an output of at least :data:`MIN_OUTPUT_PIXELS` pixels (7×7) per image.

Or, the stem form: plain NCHW in with at most 4 channels, NCHW[x]c out, a constant float32 square
k × k weight with ⌈k / 2⌉ in :data:`PHASED_TILES` (5–8), stride 2, the same padding on every
side, groups 1, dilation 1, at least 49 output pixels and whole output channel blocks.

The output tile is 4 × 4 on images of :data:`MIN_LARGE_TILES` such tiles or more, else 2 × 2
(:func:`winograd_tile`). The weights are transformed here, once (``U = G g Gᵀ``, 16/9 or 36/9
of the direct weights' size), and
become a constant; the call is marked out-element-wise fusable, so the bias, residual add and
activation after it fuse into its output transform.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import channel_block, static_float_conv_weight, weight_as_oihw
from ..schedules.winograd_conv import PhasedInput, WinogradShape, phase_weights, winograd_conv2d_primfunc, winograd_weights
from .layer_records import LayerRecord

# ResNet's last stage (7×7 images) takes it too: a 4×4 grid of tiles computes 64 pixels for 49
# and the transformed weights (16.7 MB for 512 → 512) are 1.8× the direct ones, but since the
# product prefetches the next task's weights (lowering/weight_prefetch.py) it ran 2.9 → 1.9 ms
# per conv in a whole ResNet-18 (Zen 4, 1 thread; 1.55 → 1.14 ms at 2 threads). Smaller images
# keep the direct kernel (unmeasured: too few tiles to amortize the transforms). Tried (session
# 31, Zen 5): transforming these convs' weights inside the kernel, each parallel task a row ξ of
# positions of its output blocks, so that 9.4 MB are read instead of 16.7 (they wait on memory
# at 2 threads: ×1.57–1.59 over 1 thread): 614 → 1,260 µs per conv at 1 thread, 375 → 593 at 2
# (select or branch per row alike; the transform's loads and stores per weight cost more than
# the 16 tiles' multiply-adds that use each one, 24% even with the transform reduced to a copy).
MIN_OUTPUT_PIXELS = 49
# F(4×4, 3×3) (4× fewer multiply-adds than direct, 36 positions per tile) on images of 5 × 5 tiles
# or more, F(2×2, 3×3) (2.25×, 16 positions) below. Its product multiplies 1.8× less per output,
# but its transformed weights are 2.25× F(2×2)'s and each is used by a quarter as many tiles.
# Zen 4, 1 thread, builds profiled in turns (ms per conv in the model, F(2×2) → F(4×4)):
# ResNet-18's 64 channels at 56×56 1.05 → 0.69, 128 at 28×28 1.0 → 0.6–0.68, 256 at 14×14
# (16 tiles) 1.05 → 1.02; YOLOv5s's 128 at 40×40 2.2 → 1.4–1.6, 256 at 20×20 1.24 → 0.71,
# but its 10×10 images (9 tiles of 16 pixels for 100) 0.31–0.58 → 0.42–0.80.
MIN_LARGE_TILES = 25
# A stride-2 conv on at most 4 input channels (an image network's stem) runs as the stride-1 conv
# of its 4 input phases with ⌈k / 2⌉ × ⌈k / 2⌉ kernels: 7 × 7 and 8 × 8 (ResNet) as F(4×4, 4×4),
# 5 × 5 and 6 × 6 (YOLOv5) as F(m×m, 3×3) with m as for a 3 × 3 conv (None: winograd_tile).
# ResNet-18's stem (Zen 4, 1 thread, kernel alone): direct 2.22 ms, F(3×3, 4×4) 1.27, F(4×4, 4×4) 1.14.
PHASED_TILES = {4: 4, 3: None}
MAX_PHASED_CHANNELS = 4  # 16 phase channels: one AVX-512 block, two AVX2 ones
WINOGRAD_LANES = (8, 16)  # AVX2, AVX-512
# ``--conv-algorithm``: ``auto`` lets this lowering take the convs it can; ``direct`` keeps every
# float conv on the direct kernel (a plain sum of products: no transform rounding, and the
# baseline for comparing compressed layers with dense ones by multiply-adds).
CONV_ALGORITHMS = ("auto", "direct")


class WinogradLayers:
    """The Winograd lowering of one build for a ``lanes``-wide target; ``count`` says how many
    convs it lowered (reset by :meth:`start`)."""

    def __init__(self, lanes: int, enabled: bool = True):
        self.enabled = enabled and lanes in WINOGRAD_LANES
        self.block = lanes  # the channel block of a lanes-wide target (targets/kernel_target.py)
        self.count = 0

    def start(self) -> None:
        self.count = 0

    def lower(self, builder, call):
        """``(kernel call, LayerRecord)`` for a conv2d the Winograd kernel takes (module
        docstring) in the blocked layout it has now, else None."""
        shape, weight = self._eligible(call)
        if shape is None:
            return None
        data_block, out_block = channel_block(str(call.attrs.data_layout)), channel_block(str(call.attrs.out_layout))
        if (data_block, out_block) != ((0, shape.block) if shape.phased else (shape.block, shape.block)):
            return None
        gvar = builder.add_func(winograd_conv2d_primfunc(shape), "winograd_conv2d")
        self.count += 1
        m, r, window = shape.tile, shape.kernel, shape.transform.window
        if shape.phased is None:
            fewer = 9 * m * m / window**2
            plan = f"fp32 Winograd F({m}×{m}, 3×3) conv, NCHW{shape.block}c kernel ({fewer:.2f}× fewer multiply-adds)"
        else:  # the direct conv's k² · C per output against the product's (m + r − 1)² · 4C per m² outputs
            k = weight.shape[2]
            fewer = k * k * m * m / (window**2 * 4)
            plan = f"fp32 Winograd F({m}×{m}, {r}×{r}) conv of the 4 input phases of a stride-2 {k}×{k} conv, NCHW{shape.block}c output ({fewer:.2f}× fewer multiply-adds)"
            weight = phase_weights(weight, shape.block)
        record = LayerRecord("conv2d", "winograd_conv2d", plan)
        out = relax.TensorType([int(v) for v in call.ty.shape], "float32")
        return relax.call_tir(gvar, [call.args[0], relax.const(winograd_weights(weight, shape.block, m))], out), record

    def output_tile(self, call):
        """m (2, 3 or 4) of the F(m × m, r × r) kernel this conv2d runs once it is blocked, or None
        where it keeps the direct kernel: asked before layout conversion too (by the sparse
        choice, which compares against it)."""
        shape = self._eligible(call)[0]
        return None if shape is None else shape.tile

    def _eligible(self, call):
        """``(WinogradShape, OIHW weight)`` when the kernel takes ``call`` (NCHW, or blocked by
        ConvertLayout), else ``(None, None)``."""
        if not self.enabled or getattr(call.op, "name", "") != "relax.nn.conv2d":
            return None, None
        attrs = call.attrs
        try:
            block = channel_block(str(attrs.data_layout))
        except ValueError:
            return None, None
        if block not in (0, self.block):  # a model that fell back to smaller channel blocks
            return None, None
        strides, padding = [int(v) for v in attrs.strides], [int(v) for v in attrs.padding]
        if int(attrs.groups) != 1 or [int(v) for v in attrs.dilation] != [1, 1] or str(call.args[0].ty.dtype) != "float32":
            return None, None
        if strides == [2, 2] and block == 0:
            return self._eligible_phased(call, padding)
        if strides != [1, 1] or padding != [1, 1, 1, 1]:
            return None, None
        weight = static_float_conv_weight(call)
        if weight is None or weight.shape[2:] != (3, 3):
            return None, None
        dims = [int(v) for v in call.args[0].ty.shape]
        batch, channels, height, width = (dims[0], dims[1] * dims[4], dims[2], dims[3]) if block else dims
        if height * width < MIN_OUTPUT_PIXELS or channels % self.block or weight.shape[0] % self.block:
            return None, None
        return WinogradShape(batch, channels, weight.shape[0], height, width, self.block, winograd_tile(height, width)), weight

    def _eligible_phased(self, call, padding: list):
        """``(WinogradShape, OIHW weight)`` for a stride-2 conv on a plain NCHW input of at most
        :data:`MAX_PHASED_CHANNELS` channels (its 4 phases in as many channel blocks as they fill;
        module docstring), else ``(None, None)``."""
        dims = getattr(call.args[0].ty, "shape", None)
        weight = constant_value(call.args[1])
        if dims is None or not all(isinstance(v, tvm.tirx.IntImm) for v in dims) or weight is None or weight.dtype != np.float32:
            return None, None
        weight = weight_as_oihw(weight, str(call.attrs.kernel_layout))
        batch, channels, height, width = (int(v) for v in dims)
        if weight is None or len(set(padding)) != 1 or weight.shape[2] != weight.shape[3] or channels > MAX_PHASED_CHANNELS:
            return None, None
        kernel, pad = weight.shape[2], padding[0]
        half = -(-kernel // 2)
        out_h, out_w = (height + 2 * pad - kernel) // 2 + 1, (width + 2 * pad - kernel) // 2 + 1
        if half not in PHASED_TILES or out_h * out_w < MIN_OUTPUT_PIXELS or weight.shape[0] % self.block:
            return None, None
        tile = PHASED_TILES[half] or winograd_tile(out_h, out_w)
        phased = PhasedInput(channels, height, width, pad)
        phase_channels = -(-4 * channels // self.block) * self.block
        return WinogradShape(batch, phase_channels, weight.shape[0], out_h, out_w, self.block, tile, half, phased), weight


def winograd_tile(height: int, width: int) -> int:
    """m of F(m × m, 3 × 3) for an image of ``height × width``: 4 where it has at least
    :data:`MIN_LARGE_TILES` 4 × 4 tiles, else 2."""
    return 4 if -(-height // 4) * -(-width // 4) >= MIN_LARGE_TILES else 2
