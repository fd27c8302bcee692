"""Channel shuffles between blocked tensors → one channel-permutation kernel
(schedules/channel_permutation.py).

The layout conversion leaves ops with no blocked form in NCHW, with relayouts around them: a
ShuffleNet channel shuffle between two blocked convs becomes ``layout_transform`` to NCHW →
``strided_slice`` (the padding channels off) → ``reshape`` → ``permute_dims`` → ``reshape`` →
``pad`` (channels back to whole blocks) → ``layout_transform`` to NCHW[b]c. Each output channel
of such a chain is one input channel (or a zero), whatever the pixel, so this pass follows the
chain on a vector of channel numbers (numpy: the ops themselves, on tensors whose image axes are
1 × 1) and replaces it with the kernel.

A chain qualifies when it starts at a channel-block relayout to NCHW of a float32 tensor, ends at
one back to NCHW[b]c with the same b, every value between has that one reader, and every op
between is a ``strided_slice`` of channels, a ``reshape`` or ``permute_dims`` that keeps the
batch and image axes where they are, or a zero ``pad`` of channels. Anything else is left to the
relayouts.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.detect_binary import op_name
from ..passes.relax_functions import rewrite_with_builder
from ..schedules.channel_permutation import channel_permutation_primfunc
from .binary_thresholds import use_counts
from .channel_relayouts import channel_relayout_of

CHAIN_OPS = ("relax.strided_slice", "relax.reshape", "relax.permute_dims", "relax.nn.pad")


@tvm.transform.module_pass(opt_level=0, name="slimtvm.BlockedChannelPermutations")
class BlockedChannelPermutations:
    """Module pass (after the layout conversion): channel-permuting chains between blocked
    tensors (module docstring) → one kernel each; ``count`` says how many."""

    def __init__(self):
        self.count = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_with_builder(mod, rewriter)
        self.count = rewriter.count
        return mod


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0

    def start(self, func) -> None:
        self.uses = use_counts(func)
        self.values = {}  # var -> bound value, of the function being rewritten

    def visit_var_binding_(self, binding):
        self.values[binding.var] = binding.value
        replaced = self._permutation(binding.value)
        if replaced is None:
            super().visit_var_binding_(binding)
            return
        self.count += 1
        self.set_var_remap(binding.var, self.builder_.emit(replaced, "permuted_channels"))

    def _permutation(self, value):
        """The kernel call for a chain ending at ``value`` (a relayout to NCHW[b]c), else None."""
        if op_name(value) != "relax.layout_transform":
            return None
        end = channel_relayout_of(value)
        if end is None or not end[5]:
            return None
        chain, current = [], value.args[0]
        while isinstance(current, relax.Var) and op_name(self.values.get(current)) in CHAIN_OPS and self.uses.get(current, 0) == 1:
            chain.append(self.values[current])
            current = self.values[current].args[0]
        start_call = self.values.get(current) if isinstance(current, relax.Var) else None
        if not chain or self.uses.get(current, 0) != 1 or op_name(start_call) != "relax.layout_transform":
            return None
        start = channel_relayout_of(start_call)
        if start is None or start[5] or start[4] != end[4] or start[0] != end[0] or start[2:4] != end[2:4]:
            return None
        sources = channel_sources(list(reversed(chain)), start[0], start[1], start[2:4])
        if sources is None or len(sources) != end[1]:
            return None
        batch, channels, height, width, block, _ = start
        func = channel_permutation_primfunc(batch, channels // block, height, width, block, tuple(int(s) for s in sources)).without_attr("global_symbol")
        gvar = self.builder_.add_func(func, "channel_permutation")
        source = self.visit_expr(start_call.args[0])
        return relax.call_tir(gvar, [source], relax.TensorType([int(v) for v in value.ty.shape], "float32"))


def channel_sources(chain: list, batch: int, channels: int, image: tuple) -> np.ndarray | None:
    """For ``chain`` (the ops from an NCHW tensor of ``batch`` × ``channels`` × ``image``, in
    order), each output channel's input channel (−1: a zero), or None when an op is not one the
    module docstring allows (or moves the batch or image axes)."""
    ids = np.arange(channels, dtype=np.int64).reshape(1, channels, 1, 1)
    for call in chain:
        name = op_name(call)
        shape = [int(v) for v in call.ty.shape] if call.ty.shape is not None and all(isinstance(v, tvm.tirx.IntImm) for v in call.ty.shape) else None
        if shape is None or len(shape) < 4 or shape[0] != batch or tuple(shape[-2:]) != tuple(image):
            return None
        if name == "relax.strided_slice":
            axes, begin, end = (_ints(arg) for arg in call.args[1:4])
            strides = _ints(call.args[4]) if len(call.args) > 4 else [1]
            if axes != [1] or strides != [1]:
                return None
            ids = ids[:, begin[0] : end[0]]
        elif name == "relax.reshape":
            ids = ids.reshape([1, *shape[1:-2], 1, 1])
        elif name == "relax.permute_dims":
            axes = [int(a) for a in call.attrs.axes]
            rank = len(axes)
            if axes[0] != 0 or axes[-2:] != [rank - 2, rank - 1]:
                return None
            ids = ids.transpose(axes)
        elif name == "relax.nn.pad":
            widths = [int(v) for v in call.attrs.pad_width]
            if float(call.attrs.pad_value) != 0.0 or str(call.attrs.pad_mode) != "constant" or any(widths[i] for i in range(len(widths)) if i not in (2, 3)):
                return None
            ids = np.pad(ids, ((0, 0), (widths[2], widths[3]), (0, 0), (0, 0)), constant_values=-1)
        else:
            return None
    return ids.reshape(-1) if ids.ndim == 4 else None


def _ints(expr) -> list:
    """The integers of a Relax tuple of constants (a strided_slice's axes, begins, ends)."""
    return [int(v) for v in getattr(expr, "fields", expr)]
