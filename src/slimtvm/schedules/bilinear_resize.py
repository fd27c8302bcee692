"""Bilinear upsampling (ONNX ``Resize``, mode ``linear``) as two passes: along the rows, then down the columns.

TOPI's ``resize2d`` computes every output pixel from its four neighbours at once: two
coordinates, two floors and four clamped gathers per pixel, which TVM's generic schedule runs
with vector gathers. A segmentation head's last upsampling (21 classes, 14 × 14 → 224 × 224 in
torchvision's DeepLabV3 and LR-ASPP) took 3.8 ms at 1 thread on an Intel Xeon, against
onnxruntime's 2.0 for the whole node (Emerald Rapids, session 37).

Bilinear interpolation is separable, and TOPI's own formula already is:
``lerp(lerp(p00, p01, ax), lerp(p10, p11, ax), ay)``. So the first pass (``resize_rows``)
interpolates every *input* row to the output width (``lerp(p0, p1, ax)``, the gathers on a row
that is in L1), and the second (``resize_bilinear``) every output row from the two rows of the
first pass around it, with one weight per row: two contiguous loads and a lerp per output,
vectorized along the row (or along the channel block's lanes in NCHW[x]c). The coordinates are
TOPI's (``get_inx``, the same clamping of the neighbours at the edges), and the lerps are the same
operations in the same order, so the values are those of TVM's legalization.

Taken for upsampling along the rows (output height ≥ input height: the first pass has no more
rows than the output); refused otherwise (TOPI's compute stays).
"""

from __future__ import annotations

from tvm import s_tir, te, tirx
from tvm.topi.image.resize import get_inx

from .cpu_rule import CPURule

ROWS_BLOCK = "resize_rows"
RESIZE_BLOCK = "resize_bilinear"
COORDINATE_MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")


def _lerp(a, b, t):
    return a * (1.0 - t) + b * t  # TOPI's _lerp: the same rounding as TVM's own resize


def _neighbours(out_index, in_size: int, out_size: int, mode: str):
    """(lower input index, upper input index, weight of the upper) for output index ``out_index``,
    as TOPI's linear resize computes them (indices clamped to the image)."""
    position = get_inx(out_index, tirx.IntImm("int32", in_size), tirx.IntImm("int32", out_size), mode)
    lower = te.floor(position).astype("int32")
    weight = position - lower
    last = in_size - 1
    return tirx.max(tirx.min(lower, last), 0), tirx.max(tirx.min(lower + 1, last), 0), weight


def separable_bilinear(data: te.Tensor, out_height: int, out_width: int, mode: str, blocked: bool) -> te.Tensor:
    """TE compute (module docstring) of ``data`` (NCHW, or NCHW[x]c when ``blocked``) resized to
    ``out_height × out_width``. Refuses coordinate modes outside :data:`COORDINATE_MODES` and
    downsampling along the rows."""
    height, width = int(data.shape[2]), int(data.shape[3])
    if mode not in COORDINATE_MODES or out_height < height:
        raise ValueError(f"separable bilinear resize needs upsampling along the rows and a mode of {COORDINATE_MODES}, got {mode} {height} → {out_height}")
    lanes = tuple(data.shape[4:]) if blocked else ()

    def rows(n, c, i, x, *lane):
        left, right, weight = _neighbours(x, width, out_width, mode)
        return _lerp(data[(n, c, i, left) + lane], data[(n, c, i, right) + lane], weight)

    def columns(n, c, y, x, *lane):
        top, bottom, weight = _neighbours(y, height, out_height, mode)
        return _lerp(horizontal[(n, c, top, x) + lane], horizontal[(n, c, bottom, x) + lane], weight)

    horizontal = te.compute(tuple(data.shape[:3]) + (out_width,) + lanes, rows, name=ROWS_BLOCK)
    return te.compute(tuple(data.shape[:2]) + (out_height, out_width) + lanes, columns, name=RESIZE_BLOCK)


class BilinearResize(CPURule):
    """dlight rule: the two passes of :func:`separable_bilinear`, each parallel over images ×
    channels (blocks) × rows and vectorized along its innermost axis (the row, or the channel
    block's lanes); element-wise stages fused before or after it are inlined. Declines (None: the
    generic schedule takes the PrimFunc) a fused stage that inlines neither way, such as a
    concat of the resized tensor with others (DeepLabV3's pooling branch)."""

    main_block = RESIZE_BLOCK

    def schedule_block(self, sch: s_tir.Schedule, block):
        rows = sch.get_sblock(ROWS_BLOCK)
        for other in [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint not in (ROWS_BLOCK, RESIZE_BLOCK)]:
            try:
                sch.compute_inline(other)
            except s_tir.ScheduleError:  # a consumer stage: inline it into the resize instead
                try:
                    sch.reverse_compute_inline(other)
                except s_tir.ScheduleError:
                    return None
        for stage in (rows, sch.get_sblock(RESIZE_BLOCK)):
            self._parallel_rows(sch, stage)
        return sch

    def _parallel_rows(self, sch: s_tir.Schedule, stage) -> None:
        loops = sch.get_loops(stage)
        sch.parallel(sch.fuse(*loops[:3]))
        inner = loops[3:]
        if len(inner) == 2:  # NCHW[x]c: the channel block's lanes
            sch.vectorize(inner[1])
            return
        (row,) = inner
        if int(sch.get(row).extent) > self.lanes:
            _, lane = sch.split(row, [None, self.lanes])
            sch.vectorize(lane)
        else:
            sch.vectorize(row)
