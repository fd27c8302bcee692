"""Per-layer records of what the lowering did with every conv2d and matmul, in graph order.

The lowering writes one :class:`LayerRecord` per linear layer as it decides (binary kernel,
fp32 kernel of a family, or generic schedule); ``inspect`` shows them next to the ONNX layers
and the manifest stores them. Nothing here re-derives a decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class LayerRecord:
    """``op``: ``conv2d`` or ``matmul``; ``kernel``: the kernel family of
    :mod:`slimtvm.schedules.registry` (``binary_conv2d``, ``conv2d``, ``depthwise``, ``dense``,
    ``sparse_conv2d``, ``binary_grouped_conv2d``, ``binary_dense``), ``generic``, or ``none``
    (an all-zero weight: no kernel runs); ``plan``: what happens, in words."""

    op: str
    kernel: str
    plan: str

    def to_json(self) -> dict:
        return asdict(self)


def records_of(op: str, records: list) -> list:
    """The records of one op kind (``conv2d`` or ``matmul``), in graph order."""
    return [record for record in records if record.op == op]
