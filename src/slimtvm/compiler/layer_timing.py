"""Time a layer against its replacement on the target: the measurement behind a per-layer choice.

Both candidates are one-layer ONNX models (the layer, and the chain that would replace it). Each
is compiled for the target with the whole pipeline and timed on this machine, one thread, on
device tensors (no numpy copies), the two taking turns in blocks after warm-up; the median times
are compared. Candidates with the same structure (ops, attributes, weight shapes, input shape)
are timed once: a dense kernel's speed does not depend on its weights' values.

Only a target this machine executes can be timed: the host preset, and the portable ``x86-64``
(AVX2) build on an x86-64 host. For another target :func:`layer_timer` returns None and the
caller decides without a measurement.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx

from ..targets.presets import host_arch, resolve_target

TIMED_RUNS = 30
TIMING_BLOCK = 5


def _structure(model: onnx.ModelProto) -> tuple:
    nodes = tuple((n.op_type, tuple(a.SerializeToString() for a in n.attribute), len(n.input)) for n in model.graph.node)
    weights = tuple(tuple(init.dims) for init in model.graph.initializer)
    inputs = tuple(tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in model.graph.input)
    return nodes, weights, inputs


def runs_here(target) -> bool:
    """Whether code for ``target`` executes on this machine (see module doc)."""
    spec = resolve_target(target)
    if spec.arch != host_arch():
        return False
    return spec.name == "host" or (spec.name == "x86-64" and spec.arch == "x86_64")


def layer_timer(target, threads: int = 1, runs: int = TIMED_RUNS):
    """A function ``(layer model, replacement model) → (layer ms, replacement ms)`` timing both on
    ``target`` (see module doc) with ``runs`` timed runs each, or None when ``target`` cannot run
    here."""
    if not runs_here(target):
        return None
    cache: dict = {}

    def time_models(layer: onnx.ModelProto, replacement: onnx.ModelProto) -> tuple:
        key = (_structure(layer), _structure(replacement))
        if key not in cache:
            cache[key] = _time_pair(layer, replacement, target, threads, runs)
        return cache[key]

    return time_models


def _time_pair(first: onnx.ModelProto, second: onnx.ModelProto, target, threads: int, runs: int) -> tuple:
    from ..runtime.artifact import set_num_threads
    from ..runtime.bench import time_in_turns
    from .build import compile_model

    folder = tempfile.mkdtemp(prefix="slimtvm-layer-timing-")
    try:
        models = [compile_model(m, os.path.join(folder, f"candidate{i}.so"), target=target).load() for i, m in enumerate((first, second))]
        tensors = [m.to_device(m.random_inputs()) for m in models]
        set_num_threads(threads)
        try:
            runners = [lambda m=m, t=t: m.run_device(t) for m, t in zip(models, tensors)]
            times, _ = time_in_turns(runners, runs=runs, block=TIMING_BLOCK, warmup=2)
        finally:
            set_num_threads(int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)))
        return tuple(times)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
