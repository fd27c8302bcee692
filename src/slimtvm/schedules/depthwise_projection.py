"""A depthwise conv and the 1×1 conv that reads it, as one kernel: compute and CPU schedule.

The tail of an inverted residual block (MobileNetV2, MnasNet, EfficientNet without its
squeeze-excitation): ``depthwise k×k conv → per-channel bias → clip (ReLU6) → 1×1 projection``,
all in the blocked NCHW[x]c layout. As two kernels the depthwise conv writes its whole output
(MobileNetV2: 1.2–1.8 MB at 56 × 56, into storage the layers before left cold) and the
projection reads it back; here each parallel chunk (a piece of one output row) computes the
depthwise rows of its pixels for every channel into a small buffer (≤ 40 KB: in L1/L2) and
projects them at once, so the depthwise output never goes to memory.

Compute: ``dw[n, c, y, x, b] = Σ_{ky,kx} pad(data)[n, c, y·s + ky·d, x·s + kx·d, b] ·
w_dw[c, 0, ky, kx, 0, b]``, then the element-wise steps (``add`` of a per-channel constant,
``maximum`` / ``minimum`` with a scalar) in order, then ``out[n, o, y, x, v] = Σ_{c,b} act[n, c,
y, x, b] · w_pw[o, c, 0, 0, b, v]``. The same products summed in the same order as the two
kernels (the depthwise taps row by row, the projection over input channels in order), so the
result equals theirs.

Schedule: parallel over (batch, output row, ``parts`` pieces of the row), enough pieces for
:data:`~.stages.MIN_PARALLEL_CHUNKS` chunks. In a chunk: the depthwise conv per channel block in
register tiles along the row (all taps unrolled, one vector of channels each; the padded reads
stay conditional loads), the element-wise steps on its buffer, then the projection in register
tiles of ``oc_tile`` output channel blocks × ``px`` pixels, each step broadcasting one input
value against a vector of weights. The projection's bias, residual add and activation fuse after
it (the call is marked out-element-wise fusable) and run on each tile from its registers.

Measured on Zen 4 (MobileNetV2, ``benchmarks/profile_kernels.py``, per kernel in the model, µs at
1 / 2 threads, two kernels → one): 32 channels at 112 × 112 → 16, 185 + 114 → 265 at 1 thread;
144 at 56 × 56 → 24, 170 + 264 → 353 (362 / 184 in a calm 2-thread run, ×1.97); 192 at 28 × 28
→ 32, 47 + 87 → 121–127 (×1.95); the stride-2 144 at 56 × 56 → 28 × 28 → 32, 56 + 65 / 34 + 34
→ 107 / 59. The whole model, both builds in turns (20 rounds): 0.97–0.98× the time at 1 thread,
0.94–0.98× at 2. A loop partition into edge and interior depthwise tiles, as
schedules/depthwise_nchwc.py does, would save about 10% more of the standalone kernel's time, but
crashes TVM 0.27's ``loop_partition`` once the element-wise steps sit under the tile loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tvm import s_tir, te, tirx

from ..conv_geometry import ConvGeometry
from .cpu_rule import CPURule
from .stages import MIN_PARALLEL_CHUNKS, OUT_EWISE_FUSABLE, find_block, max_accumulators, zero_padded

DEPTHWISE_STAGE = "depthwise_projection_dw"
STEP_PREFIX = "depthwise_projection_step"
PROJECTION_BLOCK = "depthwise_projection"
STEP_OPS = ("add", "maximum", "minimum")
MAX_UNROLLED_DEPTHWISE_TILES = 8


@dataclass(frozen=True)
class ElementwiseStep:
    """One step between the depthwise conv and the projection: ``op`` (``add``, ``maximum``,
    ``minimum``) with ``scalar`` (a float) or, where ``scalar`` is None, a per-channel constant
    given as an input of the kernel, ``[1, C/x, 1, 1, x]``."""

    op: str
    scalar: float | None = None


def depthwise_projection(data, dw_weight, constants, pw_weight, steps, strides, padding, dilation):
    """TE compute of the module docstring: ``data`` ``[N, C/x, H, W, x]``, ``dw_weight``
    ``[C/x, 1, kh, kw, 1, x]``, ``constants`` the per-channel inputs of the ``steps`` that take
    one (in order), ``pw_weight`` ``[O/x, C/x, 1, 1, x, x]``; ``padding`` is (top, left, bottom,
    right). Refuses (ValueError) an unknown step."""
    n, chunks, height, width, block = data.shape
    _, _, kh, kw, _, _ = dw_weight.shape
    out_chunks = pw_weight.shape[0]
    out_block = pw_weight.shape[5]
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    padded = zero_padded(data, geometry)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    out_h, out_w = (tirx.IntImm(str(n.ty), v) for v in (geometry.out_h, geometry.out_w))  # the inputs' index type (int64 from Relax)
    shape = (n, chunks, out_h, out_w, block)
    act = te.compute(
        shape,
        lambda b, c, y, x, v: te.sum(
            padded[b, c, geometry.padded_row(y, ry), geometry.padded_col(x, rx), v] * dw_weight[c, 0, ry, rx, 0, v],
            axis=[ry, rx],
        ),
        name=DEPTHWISE_STAGE,
    )
    constant_inputs = iter(constants)
    for index, step in enumerate(steps):
        if step.op not in STEP_OPS:
            raise ValueError(f"depthwise projection: unknown element-wise step {step.op!r}")
        act = _step(act, step, None if step.scalar is not None else next(constant_inputs), f"{STEP_PREFIX}{index}")
    rc = te.reduce_axis((0, chunks), name="rc")
    rb = te.reduce_axis((0, block), name="rb")
    return te.compute(
        (n, out_chunks, out_h, out_w, out_block),
        lambda b, o, y, x, v: te.sum(act[b, rc, y, x, rb] * pw_weight[o, rc, 0, 0, rb, v], axis=[rc, rb]),
        name=PROJECTION_BLOCK,
    )


def _step(act, step: ElementwiseStep, constant, name: str):
    def value(c, v):
        return te.const(step.scalar, "float32") if constant is None else constant[0, c, 0, 0, v]

    ops = {"add": lambda a, b: a + b, "maximum": te.max, "minimum": te.min}
    apply = ops[step.op]
    return te.compute(act.shape, lambda b, c, y, x, v: apply(act[b, c, y, x, v], value(c, v)), name=name)


def depthwise_projection_primfunc(data, dw_weight, constants, pw_weight, steps, strides, padding, dilation):
    """The PrimFunc ``(data, dw_weight, *constants, pw_weight, out)`` of :func:`depthwise_projection`
    for TE placeholders, marked out-element-wise fusable."""
    out = depthwise_projection(data, dw_weight, constants, pw_weight, steps, strides, padding, dilation)
    return te.create_prim_func([data, dw_weight, *constants, pw_weight, out]).with_attr("op_pattern", OUT_EWISE_FUSABLE).without_attr("global_symbol")


@dataclass(frozen=True)
class ProjectionTile:
    """``parts`` pieces per output row (parallel chunks); the projection's register tile of
    ``oc_tile`` output channel blocks × ``px`` pixels; the depthwise register tile of ``dw_px``
    pixels."""

    parts: int
    oc_tile: int
    px: int
    dw_px: int


def default_projection_tile(batch: int, out_h: int, out_w: int, out_chunks: int, lanes: int) -> ProjectionTile:
    """The fewest row pieces that give :data:`MIN_PARALLEL_CHUNKS` chunks (pieces of at least 7
    pixels); the largest divisor of the output blocks that leaves room for 4 pixels in the
    register tile (every block of MobileNetV2's 16–32-channel projections; more blocks would
    leave one pixel per tile, reading all the weights again for every pixel), and the widest
    divisor of the piece as pixels that keeps the accumulators within
    :func:`~.stages.max_accumulators`."""
    pieces = [p for p in range(1, out_w + 1) if out_w % p == 0 and out_w // p >= 7] or [1]
    parts = next((p for p in pieces if batch * out_h * p >= MIN_PARALLEL_CHUNKS), pieces[-1])
    piece = out_w // parts
    budget = max_accumulators(lanes) - 4
    oc_tile = max(d for d in range(1, out_chunks + 1) if out_chunks % d == 0 and d * 4 <= budget)
    px = max(d for d in range(1, piece + 1) if piece % d == 0 and d * oc_tile <= budget)
    dw_px = max(d for d in range(1, min(8, piece) + 1) if piece % d == 0)
    return ProjectionTile(parts, oc_tile, px, dw_px)


def schedule_depthwise_projection(sch: s_tir.Schedule, tile: ProjectionTile) -> None:
    """Apply the module docstring's schedule to the fused PrimFunc in ``sch``."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(block).name_hint for block in blocks]
    projection_at = names.index(PROJECTION_BLOCK)
    dw = blocks[names.index(DEPTHWISE_STAGE)]
    for block, name in zip(blocks, names):
        if name == "data_pad":
            sch.compute_inline(block)
    steps = [blocks[i] for i, name in enumerate(names) if name.startswith(STEP_PREFIX)]
    for step in steps[:-1]:
        sch.compute_inline(step)
    act = steps[-1] if steps else None
    projection = blocks[projection_at]
    epilogue = blocks[projection_at + 1 :]
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    out = epilogue[-1] if epilogue else None

    # The chunk: (batch, row, piece of the row) of the last stage.
    last = out if out is not None else projection
    n, o, y, x = sch.get_loops(last)[:4]
    x_piece, x_in = sch.split(x, [tile.parts, None])
    sch.reorder(n, y, x_piece, o, x_in)
    chunk = sch.fuse(n, y, x_piece)
    sch.parallel(chunk)
    o_out, o_in = sch.split(o, [None, tile.oc_tile])
    x_out, x_px = sch.split(x_in, [None, tile.px])
    if out is not None:
        # the projection per register tile, its epilogue right after from the registers
        sch.reorder(o_out, x_out, o_in, x_px)
        sch.compute_at(projection, x_out, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(out)[-1])
        p_o, _, p_x, p_v, rc, rb = sch.get_loops(projection)[-6:]
        sch.reorder(rc, rb, p_o, p_x, p_v)
    else:
        p_v, rc, rb = sch.get_loops(projection)[-3:]
        sch.reorder(o_out, x_out, rc, rb, o_in, x_px, p_v)
        p_o, p_x = o_in, x_px
    sch.unroll(p_o)
    sch.unroll(p_x)
    sch.vectorize(p_v)
    sch.decompose_reduction(projection, rc)

    # The depthwise conv for the chunk's pixels, every channel block, in register tiles along the
    # row; the element-wise steps on each tile right after its taps. Up to
    # MAX_UNROLLED_DEPTHWISE_TILES tiles per piece are unrolled, so that TVM's simplifier proves
    # the column tests of the interior ones true (whatever the piece). (A loop partition into the
    # first, interior and last tiles, as schedules/depthwise_nchwc.py does, crashes TVM 0.27's
    # loop_partition once the steps sit under the tile loop.)
    if act is not None:
        sch.compute_at(act, chunk, preserve_unit_loops=True)
    sch.compute_at(dw, chunk, preserve_unit_loops=True)
    d_c, d_y, d_x, d_v, ky, kx = sch.get_loops(dw)[-6:]
    d_xo, d_xi = sch.split(d_x, [None, tile.dw_px])
    sch.reorder(d_c, d_y, d_xo, ky, kx, d_xi, d_v)
    if act is not None:
        sch.reverse_compute_at(act, d_xo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(act)[-1])
    if int(sch.get(d_xo).extent) <= MAX_UNROLLED_DEPTHWISE_TILES:
        sch.unroll(d_xo)
    sch.unroll(kx)
    sch.unroll(d_xi)
    sch.vectorize(d_v)
    sch.decompose_reduction(dw, ky)


class DepthwiseProjection(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is the fused depthwise projection."""

    main_block = PROJECTION_BLOCK

    def schedule_block(self, sch, block):
        loops = sch.get_loops(block)
        batch, out_chunks, out_h, out_w = (int(sch.get(loop).extent) for loop in loops[:4])
        schedule_depthwise_projection(sch, default_projection_tile(batch, out_h, out_w, out_chunks, self.lanes))
        return sch


def depthwise_projection_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: the default tile, and variants of it with twice the row
    pieces, other projection pixel tiles and other depthwise tiles (fixed per space: the
    depthwise tiles' unrolling needs their count)."""
    loops = sch.get_loops(find_block(sch, PROJECTION_BLOCK))
    batch, out_chunks, out_h, out_w = (int(sch.get(loop).extent) for loop in loops[:4])
    default = default_projection_tile(batch, out_h, out_w, out_chunks, lanes)
    piece = out_w // default.parts
    budget = max_accumulators(lanes) - 4
    tiles = [default]
    if piece % 2 == 0 and piece // 2 >= 7:
        half = piece // 2
        tiles.append(
            replace(
                default,
                parts=default.parts * 2,
                px=max(d for d in range(1, half + 1) if half % d == 0 and d * default.oc_tile <= budget),
                dw_px=max(d for d in range(1, min(8, half) + 1) if half % d == 0),
            )
        )
    tiles += [replace(default, px=px) for px in (4, 7, 8, 14) if px != default.px and piece % px == 0 and px * default.oc_tile <= budget]
    tiles += [replace(default, dw_px=d) for d in (4, 7, 8, 14) if d != default.dw_px and piece % d == 0]
    spaces = []
    for tile in tiles:
        space = sch.copy()
        schedule_depthwise_projection(space, tile)
        spaces.append(space)
    return spaces
