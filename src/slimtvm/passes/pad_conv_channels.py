"""Zero-pad the input channels of a conv up to a multiple of the layout block, exactly.

A network's first conv usually reads 1 or 3 channels (grey or RGB). Blocked layouts (NCHW8c)
need the channel count to be a multiple of the block, so without this pass that conv stays in
plain NCHW, where no register-tiled schedule applies. ResNet's 7×7 stem then costs more than all
its other layers together. Padding the input with zero channels, and the weights with zero input
channels, leaves every output exactly the same (each extra term is 0·0). It costs
``block / C_in`` times the stem's MACs, which the blocked kernel repays many times over.

Applies to ``relax.nn.conv2d`` in NCHW/OIHW with constant weights, ``groups == 1``, an input
channel count that is not a multiple of ``block``, and an output channel count that is. Refuses
nothing; other convs are left as they are.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard


@tvm.transform.module_pass(opt_level=0, name="slimtvm.PadConvChannels")
class PadConvChannels:
    """Relax module pass: pad conv input channels to a multiple of ``block`` (see module docstring)."""

    def __init__(self, block: int):
        self.block = block
        self.padded = 0

    def transform_module(self, mod, _ctx):
        data, weight = wildcard(), is_const()
        pattern = is_op("relax.nn.conv2d")(data, weight)

        def rewrite(expr, matched):
            attrs = expr.attrs
            kernel = matched[weight].value.numpy()
            cout, cin = kernel.shape[:2]
            if (
                attrs.data_layout != "NCHW"
                or attrs.kernel_layout != "OIHW"
                or int(attrs.groups) != 1
                or cin % self.block == 0
                or cout % self.block != 0
            ):
                return expr
            extra = self.block - cin % self.block
            padded_kernel = np.concatenate([kernel, np.zeros((cout, extra) + kernel.shape[2:], kernel.dtype)], axis=1)
            padded_data = relax.op.nn.pad(matched[data], [0, 0, 0, extra, 0, 0, 0, 0])
            self.padded += 1
            return relax.Call(expr.op, [padded_data, relax.const(padded_kernel)], attrs, expr.ty_args)

        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = rewrite_call(pattern, rewrite, func)
        return mod
