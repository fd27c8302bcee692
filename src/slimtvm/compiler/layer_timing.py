"""Time a layer against its replacement on the target: the measurement behind a per-layer choice.

Both candidates are one-layer ONNX models (the layer, and the chain that would replace it). Each
is compiled for the target with the whole pipeline and timed on this machine, one thread, on
device tensors (no numpy copies), the two taking turns in blocks after warm-up; the median times
are compared. Candidates with the same structure (ops, attributes, weight shapes, input shape)
are timed once: a dense kernel's speed does not depend on its weights' values.

:func:`kernel_timer` times one model built in several ways (``sparse="always"`` against
``"never"``, say) and counts the kernels alone: every call the VM makes but its own builtins and
relayouts (``layout_transform``) — a one-layer model's relayouts in and out of the blocked layout
cost a dense conv up to a third of its time, and a whole model has them at the edges only. Its
inputs are copied in before each run, untimed, so that the first kernel reads them from cache,
as ``run`` leaves numpy inputs and as a kernel inside a network finds what the one before it
wrote (left in place, the other build's turn evicted them, while a dense build's relayout, not
counted, read them into cache for its conv: ResNet-18's 64 → 128 stride-2 conv timed 1.04×
slower sparse that way).

Only a target this machine executes can be timed: the host preset, and the portable ``x86-64``
(AVX2) build on an x86-64 host. For another target both timers are None and the caller decides
without a measurement.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
import time

import onnx

from ..targets.presets import host_arch, resolve_target

TIMED_RUNS = 30
TIMING_BLOCK = 5
PAUSE_SECONDS = 0.05  # between blocks: two slimtvm builds share TVM's pool (bench.SETTLE_SECONDS is for two engines)
KERNEL_ROUNDS = 15  # instrumented runs of each build, taking turns
RELAYOUT_KERNELS = ("channel_relayout", "layout_transform")  # in the names of relayout kernels (slimtvm's, TVM's te_layout_transform*)


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


def layer_timer(target, threads: int = 1, runs: int = TIMED_RUNS, options: dict | None = None):
    """A function ``(layer model, replacement model) → (layer ms, replacement ms)`` timing both on
    ``target`` (see module doc) with ``runs`` timed runs each, both compiled with ``options``
    (compile_model's keywords, e.g. ``{"conv_algorithm": "direct"}``), or None when ``target``
    cannot run here."""
    if not runs_here(target):
        return None
    cache: dict = {}

    def time_models(layer: onnx.ModelProto, replacement: onnx.ModelProto) -> tuple:
        key = (_structure(layer), _structure(replacement))
        if key not in cache:
            cache[key] = _time_pair(layer, replacement, target, threads, runs, options or {})
        return cache[key]

    return time_models


@contextlib.contextmanager
def _timing_threads(threads: int):
    """Run the block with ``threads`` TVM threads, then back to the default count."""
    from ..runtime.artifact import set_num_threads

    set_num_threads(threads)
    try:
        yield
    finally:
        set_num_threads(int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)))


def _time_pair(first: onnx.ModelProto, second: onnx.ModelProto, target, threads: int, runs: int, options: dict) -> tuple:
    from ..runtime.bench import time_in_turns
    from .build import compile_model

    folder = tempfile.mkdtemp(prefix="slimtvm-layer-timing-")
    try:
        models = [compile_model(m, os.path.join(folder, f"candidate{i}.so"), target=target, **options).load() for i, m in enumerate((first, second))]
        tensors = [m.to_device(m.random_inputs()) for m in models]
        with _timing_threads(threads):
            runners = [lambda m=m, t=t: m.run_device(t) for m, t in zip(models, tensors)]
            times, _ = time_in_turns(runners, runs=runs, block=TIMING_BLOCK, warmup=2, settle_seconds=PAUSE_SECONDS)
        return tuple(times)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def kernel_timer(target, threads: int = 1, rounds: int = KERNEL_ROUNDS, options: dict | None = None):
    """A function ``(model, builds) → [kernel ms per build]`` for ``target`` (see module doc), or
    None when ``target`` cannot run here. ``builds``: one ``(compile options, weights matter)``
    pair per way to build ``model`` (``({"sparse": "never"}, False)``), each added to ``options``
    (the compile's own, e.g. ``{"conv_algorithm": "direct"}``); a build whose speed does
    not depend on the weights' values is compiled once per model structure, the others once per
    weights. The builds take turns, ``rounds`` instrumented runs each after two warm-up runs, at
    ``threads`` threads; each gets the median over its runs of the summed time of its kernels."""
    if not runs_here(target):
        return None
    built: dict = {}
    folder = tempfile.mkdtemp(prefix="slimtvm-kernel-timing-")

    def time_builds(model: onnx.ModelProto, builds: list) -> list:
        runners = []
        for build_options, weights_matter in builds:
            merged = {**(options or {}), **build_options}
            key = (_structure(model), tuple(sorted(merged.items())), _weights_digest(model) if weights_matter else None)
            if key not in built:
                built[key] = _instrumented_build(model, os.path.join(folder, f"build{len(built)}.so"), target, merged)
            runners.append(built[key])
        return _kernel_medians(runners, threads, rounds)

    time_builds.folder = folder  # removed by the caller when done (:func:`discard_timer`)
    return time_builds


def conv_timer(target, threads: int = 1, rounds: int = KERNEL_ROUNDS, options: dict | None = None):
    """:func:`kernel_timer` for one conv: ``(OIHW weight, geometry, batch, builds) → [kernel ms
    per build]``, timing a model of that conv alone (:func:`one_conv_model`), every build with
    ``options`` too; None when ``target`` cannot run here."""
    timer = kernel_timer(target, threads, rounds, options)
    if timer is None:
        return None

    def time_conv(weight, geometry, batch: int, builds: list) -> list:
        return timer(one_conv_model(weight, geometry, batch), builds)

    time_conv.folder = timer.folder
    return time_conv


def one_conv_model(weight, geometry, batch: int) -> onnx.ModelProto:
    """A model of one ONNX ``Conv`` (no bias) with OIHW ``weight`` (float32) and ``geometry``
    (slimtvm.conv_geometry.ConvGeometry) on a ``batch × C × H × W`` input ``x``."""
    from onnx import TensorProto, helper, numpy_helper

    g = geometry
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        kernel_shape=[g.kernel_h, g.kernel_w],
        strides=[g.stride_h, g.stride_w],
        dilations=[g.dilation_h, g.dilation_w],
        pads=[g.top, g.left, g.bottom, g.right],
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, weight.shape[1], g.height, g.width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def discard_timer(timer) -> None:
    """Delete the libraries a :func:`kernel_timer` or :func:`conv_timer` built (nothing for None)."""
    if timer is not None:
        shutil.rmtree(timer.folder, ignore_errors=True)


def _weights_digest(model: onnx.ModelProto) -> str:
    digest = hashlib.sha1()
    for init in model.graph.initializer:
        digest.update(init.SerializeToString())
    return digest.hexdigest()


def _instrumented_build(model: onnx.ModelProto, path: str, target, options: dict):
    """``run() → kernel seconds`` of one run of ``model`` compiled with ``options``."""
    import tvm
    from tvm import relax

    from .build import compile_model

    artifact = compile_model(model, path, target=target, **options)
    machine = relax.VirtualMachine(tvm.runtime.load_module(artifact.library_path), tvm.cpu())
    loaded = artifact.load()
    arrays = loaded.check_inputs(loaded.random_inputs())
    inputs = [tvm.runtime.tensor(array, tvm.cpu()) for array in arrays]
    spans, started = [], {}

    def instrument(_func, name, before, _ret, *_args):
        if before:
            started[name] = time.perf_counter()
        elif not name.startswith("vm.") and not any(kind in name for kind in RELAYOUT_KERNELS):
            spans.append(time.perf_counter() - started[name])
        return 0

    machine.set_instrument(instrument)

    def run() -> float:
        # copied in first, untimed (module doc)
        for tensor, array in zip(inputs, arrays):
            tensor.copyfrom(array)
        spans.clear()
        machine["main"](*inputs)
        return sum(spans)

    return run


def _kernel_medians(runners: list, threads: int, rounds: int) -> list:
    with _timing_threads(threads):
        for run in runners:
            run(), run()  # warm-up: first-call work, caches
        samples = [[] for _ in runners]
        for _ in range(rounds):
            for run, taken in zip(runners, samples):
                taken.append(run())
    return [statistics.median(taken) * 1e3 for taken in samples]
