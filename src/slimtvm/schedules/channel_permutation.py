"""fp32 channel permutation from NCHW[b]c to NCHW[b]c: output channel ``c`` is input channel
``sources[c]`` (a zero where it is −1), as register shuffles.

A channel shuffle (ShuffleNet's reshape → transpose → reshape between two blocked convs) ran as
three kernels: a relayout to NCHW, the shuffle on the plain tensor, a relayout back (46 µs per
shuffle of 136 channels at 28×28 on Zen 5, 1 thread). Here, per pixel and output block, the
vectors of the input blocks its lanes come from are loaded and combined by one shuffle whose
indices are constants (LLVM: ``vpermt2ps`` chains), written once: each output block's code is
generated for its own sources, so the kernel is as long as the output has blocks.

Tasks are images × runs of pixels, at least :data:`~slimtvm.schedules.stages.MIN_PARALLEL_CHUNKS`
where there are enough pixels. The PrimFunc is written whole (one block, its parallel loop
inside), as the relayout kernel's (schedules/channel_relayout.py): the generic rule leaves it as it is.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from .stages import MIN_PARALLEL_CHUNKS, find_block
from .whole_kernel import whole_kernel

PERMUTATION_BLOCK = "channel_permutation"


def channel_permutation_primfunc(batch: int, in_blocks: int, height: int, width: int, block: int, sources: tuple) -> tirx.PrimFunc:
    """``(x, out)``: ``x`` ``[batch, in_blocks, height, width, block]`` → ``out`` with
    ``len(sources) / block`` blocks, ``out`` channel ``c`` = ``x`` channel ``sources[c]`` (0 where
    it is −1). Refuses sources that are not whole output blocks or that name no input channel."""
    channels = in_blocks * block
    if len(sources) % block or any(s < -1 or s >= channels for s in sources):
        raise ValueError(f"sources must fill whole {block}-channel blocks and name input channels below {channels}")
    out_blocks, pixels = len(sources) // block, height * width
    runs = max(1, min(pixels, math.ceil(MIN_PARALLEL_CHUNKS / batch)))
    per_run = math.ceil(pixels / runs)
    runs = math.ceil(pixels / per_run)  # the last run may be partial
    source_shape, dest_shape = (batch, in_blocks, height, width, block), (batch, out_blocks, height, width, block)
    vector = f"float32x{block}"

    def at(image, group, groups, pixel):  # first lane of a pixel's block, flat
        return ((image * groups + group) * pixels + pixel) * block

    with whole_kernel(PERMUTATION_BLOCK, source_shape, dest_shape) as (builder, source, dest):

        def permute_pixel(image, pixel):
            for group in range(out_blocks):
                lanes = sources[group * block : (group + 1) * block]
                used = sorted({s // block for s in lanes if s >= 0})
                loaded = [source.vload([at(image, b, in_blocks, pixel)], vector) for b in used]
                if any(s < 0 for s in lanes):
                    loaded.append(tirx.Broadcast(tirx.const(0.0, "float32"), block))
                zero = len(used) * block
                indices = [used.index(s // block) * block + s % block if s >= 0 else zero for s in lanes]
                value = loaded[0] if indices == list(range(block)) else tirx.Shuffle(loaded, indices)
                T.buffer_store(dest, value, [tirx.Ramp(at(image, group, out_blocks, pixel), 1, block)])

        with T.parallel(0, batch * runs) as task:
            image, run = task // runs, task % runs
            with T.serial(0, per_run) as step:
                pixel = run * per_run + step
                if runs * per_run != pixels:
                    with T.If(pixel < pixels):
                        with T.Then():
                            permute_pixel(image, pixel)
                else:
                    permute_pixel(image, pixel)
    return builder.get()


def is_channel_permutation(sch) -> bool:
    """Whether the PrimFunc in ``sch`` (an ``s_tir.Schedule``) is this kernel."""
    return find_block(sch, PERMUTATION_BLOCK) is not None
