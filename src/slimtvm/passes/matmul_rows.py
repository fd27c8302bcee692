"""A matmul of a batch of short row blocks by one weight matrix → one matmul of all the rows.

``x[B…, M, K] @ w[K, N]`` with a constant 2-D ``w`` multiplies every row of ``x`` by the same
matrix, so it is ``reshape(reshape(x, [B·M, K]) @ w, [B…, M, N])``: the same products and sums.
PyTorch's ``nn.MultiheadAttention`` without its inference fast path (what the TorchScript
exporter takes) projects a sequence-first ``[L, 1, E]`` tensor, which TVM's matmul treats as
``L`` separate one-row products: the dense kernel's GEMM form then runs one row per register
tile, and torchvision's ViT-B/32 (50 tokens of 768) took 3.3× onnxruntime's time, its QKV
projection alone 59% of it (Emerald Rapids, 1 thread). As one product of ``L`` rows it takes
the GEMM form's full tiles.

Rewrites ``relax.matmul`` calls with a constant 2-D right operand and a left operand of static
shape, rank ≥ 3, whose batch axes hold more than one row block and whose blocks have fewer than
:data:`FEW_ROWS` rows (more rows already fill the register tiles; the batch's blocks are then
parallel chunks of their own). Leaves every other matmul as it is.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax

from .constants import constant_value
from .relax_functions import rewrite_relax_functions
from .static_shapes import static_shape

FEW_ROWS = 5  # schedules/dense.py's GEMM_MIN_ROWS: from here on a block fills a register tile


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.matmul":
            return call
        weight = constant_value(call.args[1])
        shape = static_shape(call.args[0])
        if weight is None or weight.ndim != 2 or shape is None or len(shape) < 3:
            return call
        *batch, rows, reduction = shape
        if math.prod(batch) < 2 or rows >= FEW_ROWS:
            return call
        self.count += 1
        flat = relax.op.reshape(call.args[0], [math.prod(batch) * rows, reduction])
        out_dtype = str(call.attrs.out_dtype)
        product = relax.op.matmul(flat, call.args[1], out_dtype=None if out_dtype in ("", "void", "None") else out_dtype)
        return relax.op.reshape(product, [*batch, rows, weight.shape[1]])


@tvm.transform.module_pass(opt_level=0, name="slimtvm.MatmulRows")
class MatmulRows:
    """Relax module pass (module docstring); ``rewritten`` counts the matmuls."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.rewritten = rewriter.count
        return mod
