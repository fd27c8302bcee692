"""Rewrite ``where(x ≥ 0, 1, −1)`` and ``where(x < 0, −1, 1)`` as ``sign(sign(x) + 0.5)``.

Both are how PyTorch code often binarizes activations (0 → +1, slimtvm's convention), and
``sign(sign(x) + 0.5)`` computes the same values (Larq's ``ste_sign`` form) with element-wise ops
only. The rewrite matters because Relax's ConvertLayout does not handle ``where``: it puts layout
transforms on the boolean condition, which TVM 0.27 then fails to legalize. After it, the binary
detection sees one form. Refuses nothing; other ``where`` calls are left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from .constants import constant_value


def _all_equal(expr, value: float) -> bool:
    array = constant_value(expr)
    return array is not None and array.size > 0 and bool(np.all(np.asarray(array, dtype=np.float64) == value))


@tvm.transform.module_pass(opt_level=0, name="slimtvm.CanonicalizeSign")
class CanonicalizeSign:
    """Relax module pass: the rewrite of the module docstring."""

    def transform_module(self, mod, _ctx):
        x, zero, on_true, on_false = wildcard(), wildcard(), wildcard(), wildcard()
        patterns = [
            (is_op("relax.where")(is_op("relax.greater_equal")(x, zero), on_true, on_false), 1.0, -1.0),
            (is_op("relax.where")(is_op("relax.less")(x, zero), on_true, on_false), -1.0, 1.0),
        ]

        def rewrite_for(true_value, false_value):
            def rewrite(expr, matched):
                if not (_all_equal(matched[zero], 0.0) and _all_equal(matched[on_true], true_value) and _all_equal(matched[on_false], false_value)):
                    return expr
                source = matched[x]
                if tuple(int(d) for d in expr.ty.shape) != tuple(int(d) for d in source.ty.shape) or str(source.ty.dtype) != "float32":
                    return expr  # a broadcasting where: not a plain binarization of x
                return relax.op.sign(relax.op.add(relax.op.sign(source), relax.const(0.5, "float32")))

            return rewrite

        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                for pattern, true_value, false_value in patterns:
                    func = rewrite_call(pattern, rewrite_for(true_value, false_value), func)
                mod[gvar] = func
        return mod
