"""Give a kernel's output the planned storage last written by a same-shaped output, where one is free.

TVM's memory planner (``relax.transform.StaticPlanBlockMemory``) gives each intermediate tensor
the smallest free storage that fits. At 2 threads and more that choice has a cost it does not
see: a kernel writes its output rows, in its own partition of its parallel loop, and each line
its core does not already hold has to be fetched first (from the other core's cache, or from L3
once it has left both). When the last writer had the same output shape (a kernel of the same
layer sequence, e.g. the convs of one ResNet stage), it also split the same rows over the same
threads, so each core finds its lines in its own cache. (The measurements below fit that: the
call that gained wrote over lines last written five kernels before by another stage; the one that
lost now writes over older lines than before, not ones the other core wrote.)

Measured on Bi-Real Net 18 (2-core Zen 4, session 48, per kernel in the whole model,
``benchmarks/profile_kernels.py --threads 1,2 --repeat 20``, builds in turns): the second of the
three 28 × 28 binary convs of its second stage wrote into the storage last held by the 56 × 56
stage's output and took 73–75 µs at 2 threads (×1.70–1.78 its 1-thread time) in five calm runs,
its two identical siblings 65–68; moved, it took 66–67 (×1.93–1.95) in four. The first conv of
the third stage gained 3 µs the same way (69–70 → 65–66); the stride-2 conv into 14 × 14, whose
storage's older contents changed with the move, lost 2 (39–40 → 42). Whole runs in turns: within
this VM's noise (2 threads 0.94–1.01×, 1 thread 0.99–1.00× the planner's time in three runs).
ResNet-18 and MobileNetV2 have nothing to move (no free storage of a same-shaped output).

This pass runs right after the planner, on the main function's flat bindings: it keeps the
planner's storages and sizes (peak memory does not change) and only re-picks, for a tensor whose
storage was last written by a tensor of another shape, another planned storage of the same
scope, device and dtype, large enough, allocated before it, whose last occupant had its shape
and which nothing else occupies while the tensor lives. It refuses (leaves the function as the
planner made it) anything but one sequence of bindings, and takes a tensor to live until the
last use of anything bound from it (a reshape, a tuple) other than a kernel call that writes it;
a kernel call's own result is never read (else it refuses too).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

_ALLOC_STORAGE = "relax.memory.alloc_storage"
_ALLOC_TENSOR = "relax.memory.alloc_tensor"


def _op_name(value) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def _used(value) -> set:
    return set(relax.analysis.free_vars(value))


class _Tensor:
    """A planned tensor: its binding, its storage, its bytes and shape, and when it lives."""

    def __init__(self, index: int, var, call):
        self.index = index
        self.var = var
        self.call = call
        self.storage = call.args[0]
        self.shape = tuple(int(d) for d in call.args[2].values)
        self.dtype = str(call.args[3].value)
        self.bytes = _bytes(self.shape, self.dtype)
        self.last = index

    def overlaps(self, other) -> bool:
        return not (self.last < other.index or other.last < self.index)


def _bytes(shape, dtype: str) -> int:
    count = 1
    for d in shape:
        count *= d
    return count * ((tvm.runtime.DataType(dtype).bits * tvm.runtime.DataType(dtype).lanes + 7) // 8)


def _int_or_none(value) -> int | None:
    """A constant integer argument's value (an ``IntImm`` or a ``PrimValue``), else None."""
    value = getattr(value, "value", None)
    return int(value) if isinstance(value, int) or isinstance(value, tvm.tirx.IntImm) else None


def _plan(bindings, body):
    """(tensors, storages) of a flat binding list, or None where the function holds anything this
    pass does not follow: a tensor at a non-zero offset or of a symbolic shape, a branch or a
    nested function (tensors planned inside them), a storage used other than by alloc_tensor."""
    storages = {}  # var -> (index, size in bytes, (device, scope, dtype))
    tensors = []
    owner = {}  # var -> the _Tensor it is (or aliases)
    call_results = set()  # what kernel calls on planned tensors returned: none is ever read
    for index, binding in enumerate(bindings):
        if not isinstance(binding, relax.VarBinding):
            return None
        value = binding.value
        name = _op_name(value)
        if name == _ALLOC_STORAGE:
            size = value.args[0]
            if not isinstance(size, relax.ShapeExpr) or len(size.values) != 1 or not isinstance(size.values[0], tvm.tirx.IntImm):
                return None
            key = (int(value.args[1].value), str(value.args[2].value), str(value.args[3].value))
            storages[binding.var] = (index, int(size.values[0]), key)
            continue
        if name == _ALLOC_TENSOR:
            offset, shape = value.args[1], value.args[2]
            if value.args[0] not in storages or _int_or_none(offset) != 0:
                return None
            if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
                return None
            tensor = _Tensor(index, binding.var, value)
            tensors.append(tensor)
            owner[binding.var] = tensor
            continue
        used_vars = _used(value)
        if isinstance(value, (relax.If, relax.SeqExpr, relax.Function)) or any(var in storages or var in call_results for var in used_vars):
            return None  # tensors planned inside a branch, a storage used other than by alloc_tensor, a call's result read
        used = [owner[var] for var in used_vars if var in owner]
        for tensor in used:
            tensor.last = index
        writes_outputs = isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar)
        if used and writes_outputs:
            call_results.add(binding.var)
        if used and not writes_outputs:  # a view or a container of the tensor: the tensor lives as long
            if len(set(map(id, used))) != 1:
                return None
            owner[binding.var] = used[0]
    for var in _used(body):
        if var in storages or var in call_results:
            return None
        if var in owner:
            owner[var].last = len(bindings)
    return tensors, storages


def _repick(tensors, storages) -> int:
    """Re-pick storages in place (the module docstring); returns how many tensors moved."""
    tenants = {var: [t for t in tensors if t.storage.same_as(var)] for var in storages}

    def previous(storage, tensor):
        earlier = [t for t in tenants[storage] if t is not tensor and t.last < tensor.index]
        return max(earlier, key=lambda t: t.index) if earlier else None

    moved = 0
    for tensor in tensors:
        current = previous(tensor.storage, tensor)
        if current is None or (current.shape, current.dtype) == (tensor.shape, tensor.dtype):
            continue
        key = storages[tensor.storage][2]
        best = None
        for storage, (index, size, other_key) in storages.items():
            if storage.same_as(tensor.storage) or other_key != key or index > tensor.index or size < tensor.bytes:
                continue
            if any(t.overlaps(tensor) for t in tenants[storage]):
                continue
            last = previous(storage, tensor)
            if last is None or (last.shape, last.dtype) != (tensor.shape, tensor.dtype):
                continue
            if best is None or last.index > best[1].index:
                best = (storage, last)
        if best is None:
            continue
        tenants[tensor.storage].remove(tensor)
        tensor.storage = best[0]
        tenants[best[0]].append(tensor)
        moved += 1
    return moved


def repick_function(func):
    """``(func with re-picked storages, tensors moved)``; ``func`` itself, 0 where nothing moved or
    where the function is not one flat sequence of bindings."""
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return func, 0
    bindings = [binding for block in body.blocks for binding in block.bindings]
    plan = _plan(bindings, body.body)
    if plan is None:
        return func, 0
    tensors, storages = plan
    moved = _repick(tensors, storages)
    if not moved:
        return func, 0
    moving = [t for t in tensors if not t.storage.same_as(t.call.args[0])]

    def repoint(call):
        for tensor in moving:
            if call.same_as(tensor.call):
                return relax.Call(call.op, [tensor.storage, *call.args[1:]], call.attrs, call.ty_args, call.span)
        return call

    new_func = tvm_ffi.structural_map(func, [(relax.Call, repoint)])
    return new_func, moved


class StorageByShape:
    """The module pass, with ``moved``: tensors given another storage, per function name."""

    def __init__(self):
        self.moved: dict[str, int] = {}

    def __call__(self) -> tvm.transform.Pass:
        @tvm.transform.module_pass(opt_level=0, name="slimtvm.StorageByShape")
        def _pass(mod, _ctx):
            for gvar, func in list(mod.functions.items()):
                if isinstance(func, relax.Function):
                    new_func, moved = repick_function(func)
                    if moved:
                        mod[gvar] = new_func
                        self.moved[gvar.name_hint] = moved
            return mod

        return _pass
