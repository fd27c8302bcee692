"""Blocked convs whose weights are zero outside a band of input channels → the banded kernel
(schedules/banded_conv.py).

Asked by the layer lowering (lowering/binary_layers.py) about every float conv2d, once layouts
are final, before the sparse and Winograd lowerings. A conv takes the banded kernel when all of
these hold, else the others are asked:

- the target has 16 (AVX-512) or 8 (AVX2) fp32 lanes and the conv runs in 16- or 8-channel blocks;
- NCHW[x]c out, NCHW[x]c or plain NCHW in (channels that are not whole blocks), a constant
  float32 weight (any kernel, stride, padding, dilation), groups 1, static shapes;
- its weights' band (:func:`~slimtvm.schedules.banded_conv.weight_band`) holds at most
  :data:`MAX_MULTIPLY_ADD_FRACTION` of a dense conv's multiply-adds;
- its weights are a grouped conv's made block diagonal in this build
  (lowering/split_grouped_convs.py) or an LRN's window sum (lowering/channel_windows.py),
  channel padding aside. A pruned conv whose zeros happen to leave a band keeps the dense and
  sparse kernels' choice, which was measured for it.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..conv_geometry import ConvGeometry
from ..passes.constants import constant_value
from ..passes.detect_binary import channel_block, static_float_conv_weight
from ..schedules.banded_conv import BandedShape, banded_conv2d_primfunc, banded_weights, parallel_tasks, pixel_tile, weight_band
from ..schedules.stages import MIN_ACCUMULATORS, MIN_PARALLEL_CHUNKS
from .layer_records import LayerRecord

# A dense conv's share of multiply-adds above which the band saves too little to pay for its
# shorter register tiles and the per-tile loop counts: ShuffleNet's 4 groups give 0.28–0.37.
MAX_MULTIPLY_ADD_FRACTION = 0.5
BANDED_LANES = (8, 16)


class BandedLayers:
    """The banded lowering of one build for a ``lanes``-wide target; ``count`` says how many
    convs it lowered (reset by :meth:`start`)."""

    def __init__(self, lanes: int, block_diagonal_weights=lambda: []):
        self.enabled = lanes in BANDED_LANES
        self.lanes = lanes  # the register budget the schedule (the rule of this target) uses
        self.block_diagonal_weights = block_diagonal_weights  # () -> the OIHW weights the grouped-conv and LRN passes made
        self.count = 0

    def start(self) -> None:
        self.count = 0

    def lower(self, builder, call):
        """``(kernel call, LayerRecord)`` for a conv2d the banded kernel takes (module
        docstring), else None."""
        shape, weight = self._eligible(call)
        if shape is None:
            return None
        gvar = builder.add_func(banded_conv2d_primfunc(shape), "banded_conv2d")
        self.count += 1
        layout = f"plain NCHW input → NCHW{shape.block}c" if shape.plain_channels else f"NCHW{shape.block}c"
        kernel = f"{shape.geometry.kernel_h}×{shape.geometry.kernel_w}"
        plan = f"fp32 banded {kernel} conv, {layout} kernel (the weights' band: {shape.multiply_add_fraction:.2f} of a dense conv's multiply-adds)"
        out = relax.TensorType([int(v) for v in call.ty.shape], "float32")
        return relax.call_tir(gvar, [call.args[0], relax.const(banded_weights(weight, shape))], out), LayerRecord("conv2d", "banded_conv2d", plan)

    def takes_plain(self, call, block: int) -> bool:
        """Whether the kernel will take this NCHW conv2d once it runs in ``block``-channel blocks
        (asked by the layout choice, before the sparse lowering may keep it NCHW)."""
        if not self.enabled or block not in BANDED_LANES or getattr(call.op, "name", "") != "relax.nn.conv2d":
            return False
        attrs = call.attrs
        if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW" or int(attrs.groups) != 1:
            return False
        weight = constant_value(call.args[1])
        if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or not self._block_diagonal(weight):
            return False
        return band_fraction(weight, block) <= MAX_MULTIPLY_ADD_FRACTION

    def _block_diagonal(self, weight: np.ndarray) -> bool:
        """Whether OIHW ``weight`` is one the grouped-conv or LRN pass made, with zero channels padded on."""
        for made in self.block_diagonal_weights():
            if weight.shape[2:] != made.shape[2:] or weight.shape[0] < made.shape[0] or weight.shape[1] < made.shape[1]:
                continue
            out_channels, channels = made.shape[:2]
            if np.array_equal(weight[:out_channels, :channels], made) and not weight[out_channels:].any() and not weight[:, channels:].any():
                return True
        return False

    def _eligible(self, call):
        if not self.enabled or getattr(call.op, "name", "") != "relax.nn.conv2d":
            return None, None
        attrs = call.attrs
        try:
            blocks = channel_block(str(attrs.data_layout)), channel_block(str(attrs.out_layout))
        except ValueError:
            return None, None
        block = blocks[1]
        if block not in BANDED_LANES or blocks[0] not in (0, block) or int(attrs.groups) != 1 or str(call.args[0].ty.dtype) != "float32":
            return None, None
        weight = static_float_conv_weight(call)
        if weight is None or not self._block_diagonal(weight):
            return None, None
        dims = [int(v) for v in call.args[0].ty.shape]
        plain = dims[1] if blocks[0] == 0 else 0
        batch = dims[0]
        geometry = ConvGeometry.of(dims[2], dims[3], *weight.shape[2:], attrs.strides, attrs.padding, attrs.dilation)
        in_blocks = -(-plain // block) if plain else dims[1]
        out_blocks = weight.shape[0] // block
        candidates = []
        for oc_tile in (1, 2, 4):
            if out_blocks % oc_tile == 0:
                starts, counts = weight_band(weight, block, oc_tile)
                candidates.append(BandedShape(batch, in_blocks, out_blocks, geometry, block, oc_tile, starts, counts, plain))
        candidates = [shape for shape in candidates if shape.multiply_add_fraction <= MAX_MULTIPLY_ADD_FRACTION]
        if not candidates:
            return None, None
        return max(candidates, key=lambda shape: _preference(shape, self.lanes)), weight


def band_fraction(weight: np.ndarray, block: int) -> float:
    """The multiply-adds of OIHW ``weight``'s band (output blocks of ``block`` one by one, the
    output channels padded to whole blocks) over a dense conv's."""
    out_channels, channels = weight.shape[:2]
    padded = np.zeros((-(-out_channels // block) * block, *weight.shape[1:]), dtype=np.float32)
    padded[:out_channels] = weight
    counts = weight_band(padded, block, 1)[1]
    return sum(counts) / (len(counts) * channels)


def _preference(shape: BandedShape, lanes: int) -> tuple:
    """How the output-block tile is chosen (larger is better): enough accumulators to keep both
    FMA pipes busy (8), then enough parallel steps, then the fewest multiply-adds, then the larger
    register tile. ShuffleNet's 544-channel convs at 7×7 (Zen 5, 1 thread, in the model): 2 blocks
    × 7 pixels, 11% more multiply-adds than 1 × 7, ran 10% faster (34.6 against 38.5 µs)."""
    rows, cols = pixel_tile(shape.height, shape.width, shape.oc_tile, lanes)
    accumulators = rows * cols * shape.oc_tile
    return (accumulators >= MIN_ACCUMULATORS, parallel_tasks(shape, lanes) >= MIN_PARALLEL_CHUNKS, -shape.multiply_add_fraction, accumulators)
