"""The default (untuned) schedule rules, in the order dlight tries them."""

from __future__ import annotations


def default_rules(lanes: int) -> list:
    """slimtvm's kernel rules first, the generic fallback last; ``lanes`` = fp32 SIMD width."""
    from .bitserial_conv import BinaryConv
    from .conv2d_nchwc import Conv2dNCHWc
    from .dense import Dense
    from .depthwise_nchwc import DepthwiseNCHWc
    from .generic_cpu import GenericCPU

    return [BinaryConv(lanes), Conv2dNCHWc(lanes), DepthwiseNCHWc(lanes), Dense(lanes), GenericCPU(lanes)]
