"""Constants reshaped, transposed and relayouted by numpy (passes/constant_data_movement.py) equal
what Relax's FoldConstant computes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from slimtvm.passes.constant_data_movement import fold_constant_data_movement, split_and_permutation
from slimtvm.passes.constants import constant_value

MAPS = {
    "OIHW → OIHW16i16o": ((32, 48, 3, 3), lambda o, i, h, w: (o // 16, i // 16, h, w, i % 16, o % 16)),
    "NCHW → NCHW8c": ((1, 24, 5, 7), lambda n, c, h, w: (n, c // 8, h, w, c % 8)),
    "OI → IO": ((40, 24), lambda o, i: (i, o)),
}
LEFT_TO_FOLD_CONSTANT = {
    "padded blocks": ((1, 20, 3, 3), lambda n, c, h, w: (n, c // 16, h, w, c % 16)),  # 20 channels in 16-channel blocks
    "fused axes": ((1, 2, 3, 3, 16), lambda n, c, h, w, b: (n, c * 16 + b, h, w)),  # NCHW16c → NCHW
}


OTHER_OPERATORS = {
    "reshape": ((4, 6, 5), lambda x: relax.op.reshape(x, (24, 5))),
    "permute_dims": ((4, 6, 5), lambda x: relax.op.permute_dims(x, [2, 0, 1])),
    "permute_dims reversed": ((4, 6), lambda x: relax.op.permute_dims(x)),
    "expand_dims": ((4, 6), lambda x: relax.op.expand_dims(x, [0, 3])),
    "squeeze": ((1, 6, 1), lambda x: relax.op.squeeze(x, [0])),
    "transpose of a reshape": ((4, 6), lambda x, emit: relax.op.permute_dims(emit(relax.op.reshape(x, (2, 12))))),
}


def _module(shape, index_map=None, operator=None):
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    builder = relax.BlockBuilder()
    with builder.function("main", []):
        with builder.dataflow():
            chain = operator and operator.__code__.co_argcount == 2  # an operator on a bound variable
            call = (
                (operator(relax.const(data), builder.emit) if chain else operator(relax.const(data)))
                if operator
                else relax.op.layout_transform(relax.const(data), index_map, pad_value=0.0)
            )
            out = builder.emit_output(call)
        builder.emit_func_output(out)
    return builder.get()


def _folded_array(mod):
    """The array the function returns where it is a constant, else None."""
    body = mod["main"].body
    value = body.body if isinstance(body.body, tvm.ir.GenericConst) else body.blocks[0].bindings[-1].value
    return constant_value(value)


FOLDED = [(name, {"index_map": index_map}, shape) for name, (shape, index_map) in MAPS.items()]
FOLDED += [(name, {"operator": operator}, shape) for name, (shape, operator) in OTHER_OPERATORS.items()]


@pytest.mark.parametrize("name,call,shape", FOLDED, ids=[case[0] for case in FOLDED])
def test_numpy_equals_fold_constant(name, call, shape):
    expected = _folded_array(relax.transform.FoldConstant()(_module(shape, **call)))
    folded = _folded_array(fold_constant_data_movement(_module(shape, **call)))
    assert expected is not None and folded is not None
    assert folded.shape == expected.shape and folded.dtype == expected.dtype
    np.testing.assert_array_equal(folded, expected)


@pytest.mark.parametrize("name", list(LEFT_TO_FOLD_CONSTANT))
def test_other_relayouts_are_left_to_fold_constant(name):
    shape, index_map = LEFT_TO_FOLD_CONSTANT[name]
    assert split_and_permutation(tvm.tirx.IndexMap.from_func(index_map), list(shape)) is None
    assert _folded_array(fold_constant_data_movement(_module(shape, index_map))) is None
