"""Relax element-wise operations: each output element from the same element of each input
(broadcasting aside), so they pass through any layout and treat each image alone."""

from __future__ import annotations

ELEMENTWISE_OPS = frozenset(
    {
        "relax.add",
        "relax.subtract",
        "relax.multiply",
        "relax.divide",
        "relax.maximum",
        "relax.minimum",
        "relax.nn.relu",
        "relax.clip",
        "relax.sigmoid",
        "relax.tanh",
    }
)
