"""The graph operations slimtvm legalizes to its own computes, one entry per operation.

``LegalizeOps`` calls the function registered here instead of TVM's default legalization;
every other operation keeps TVM's. A kernel family that lowers from a Relax operation adds its
entry here (docs/architecture.md, "Adding a kernel family"). Binary layers are not here: they
are recognised patterns, lowered earlier by lowering/binary_layers.py.
"""

from __future__ import annotations

from .average_pool import legalize_avg_pool2d
from .bilinear_resize import legalize_resize2d
from .channel_relayouts import legalize_layout_transform
from .conv_layouts import legalize_conv2d
from .fast_math import legalize_erf, legalize_power, legalize_sigmoid, legalize_softmax_with_fast_exp, legalize_tanh
from .gathers import legalize_take
from .nan_tests import legalize_isnan

LEGALIZATIONS = {
    # element-wise math first: a kernel family entered further down for the same operation
    # replaces it (in a dict literal the later key wins; docs/architecture.md's example does so)
    "relax.sigmoid": legalize_sigmoid,
    "relax.erf": legalize_erf,
    "relax.tanh": legalize_tanh,
    "relax.nn.softmax": legalize_softmax_with_fast_exp,
    "relax.power": legalize_power,
    "relax.isnan": legalize_isnan,
    "relax.take": legalize_take,
    "relax.nn.conv2d": legalize_conv2d,
    "relax.layout_transform": legalize_layout_transform,
    "relax.nn.avg_pool2d": legalize_avg_pool2d,
    "relax.image.resize2d": legalize_resize2d,
}
