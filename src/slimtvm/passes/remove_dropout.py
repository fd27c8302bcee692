"""Remove Dropout, an identity at inference: ``dropout(x)[0]`` → ``x``.

TVM's ONNX frontend imports Dropout as ``relax.nn.dropout``, which returns an (output, mask)
tuple; besides costing a copy, the tuple stops ``ConvertLayout`` (its layout inference expects a
tensor), so blocked layouts would not reach the layers after it. The mask output is dropped too:
ONNX inference never computes it for a graph output slimtvm compiles (the importer only exposes
element 0). Refuses nothing; a module without dropout is returned unchanged.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, is_tuple_get_item, rewrite_call, wildcard


@tvm.transform.module_pass(opt_level=0, name="slimtvm.RemoveDropout")
class RemoveDropout:
    """Relax module pass: replace every ``relax.nn.dropout(x)[0]`` by ``x``."""

    def transform_module(self, mod, _ctx):
        data = wildcard()
        pattern = is_tuple_get_item(is_op("relax.nn.dropout")(data), 0)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = rewrite_call(pattern, lambda _expr, matched: matched[data], func)
        return mod
