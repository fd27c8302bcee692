"""What the kernels need to know about a target, worked out once per build.

``KernelTarget.of(target)`` reads a TVM target (a preset's or the user's) and gives the fp32
SIMD width, the channel block of the blocked conv layout, and the popcount form of the binary
kernels. The pipeline, the lowering, the default schedules and the tuner all take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .presets import avx512_in_halves, popcount_by_table, simd_lanes

MIN_CHANNEL_BLOCK = 8  # 16-channel blocks on AVX2 measured 1.83x ORT on ResNet-50 against 1.56x


@dataclass(frozen=True)
class KernelTarget:
    """``lanes``: fp32 lanes of the widest vector unit (16 AVX-512, 8 AVX2, 4 NEON);
    ``channel_block``: channels per block of NCHW[x]c (the lanes, at least 8);
    ``popcount_tables``: binary convs count bits with AVX2 ``vpshufb`` tables;
    ``half_width_vectors``: its 16-lane instructions run as two 8-lane halves (Zen 4), so the
    sparse kernel may take 8-lane register blocks where they round less."""

    lanes: int
    channel_block: int
    popcount_tables: bool
    half_width_vectors: bool = False

    @classmethod
    def of(cls, target) -> KernelTarget:
        lanes = simd_lanes(target)
        return cls(lanes, max(lanes, MIN_CHANNEL_BLOCK), popcount_by_table(target), avx512_in_halves(target))
