"""How many parallel chunks does each kernel offer? (what bounds scaling to many cores)

    .venv/bin/python benchmarks/parallel_chunks.py [--models resnet18,mobilenet_v2,light_resnet50,PATH.onnx] [--target x86-64-avx512]
        [--input-shape input=8,3,224,224] [--goal 64]

Runs the compile pipeline up to slimtvm's default schedules (no code generation, no timing) and
reads every kernel's ``T.parallel`` loops from the scheduled TIR: their extents are the chunks
TVM's thread pool splits among threads. A kernel whose parallel loops offer fewer chunks than
``--goal`` (default 64: four per thread at 16 threads) cannot use a 16-core machine evenly.
Prints one line per kernel (fewest chunks first), then how many kernels fall short. Independent
of the machine it runs on: chunks come from the target's schedules, not from timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)


def parallel_extents(model, preset: str, input_shapes=None, with_output_shapes: bool = False, with_loop_names: bool = False) -> dict:
    """{kernel name: [extent of each parallel loop]} for ``model`` scheduled for ``preset``
    (-1 for a loop whose extent is not a constant); with ``with_output_shapes`` the values are
    (extents, shape of the kernel's last parameter: its output); with ``with_loop_names`` each
    extent is (the loop variable's name, extent): a fused loop's name lists the loops it fused,
    outermost first (``ax0_ax2_0_ax1_0_fused``: batch, pixel chunks, channel groups)."""
    import tvm
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir import dlight
    from tvm.tirx.stmt import For, ForKind

    from slimtvm.compiler.pipeline import pipeline_for
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.schedules.registry import default_rules
    from slimtvm.targets.presets import resolve_target

    target = resolve_target(preset).tvm_target()
    pipeline = pipeline_for(target)
    with target:
        steps = pipeline.to_kernels() + [dlight.ApplyDefaultSchedule(*default_rules(pipeline.lowering.target.lanes))]
        mod = tvm.transform.Sequential(steps)(import_onnx(model, input_shapes).mod)
    kernels = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        loops = []

        def visit(node, loops=loops):
            if isinstance(node, For) and node.kind == ForKind.PARALLEL:
                extent = int(node.extent.value) if hasattr(node.extent, "value") else -1
                loops.append((node.loop_var.name, extent) if with_loop_names else extent)

        tvm_ffi.structural_walk(func.body, visit)
        shape = [int(d) for d in func.params[-1].shape] if func.params else []  # the output buffer
        kernels[gvar.name_hint] = (loops, shape) if with_output_shapes else loops
    return kernels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--target", default="x86-64-avx512")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...")
    parser.add_argument("--goal", type=int, default=64)
    args = parser.parse_args(argv)
    import onnx
    from fp32_vs_onnxruntime import model_path

    from slimtvm.frontend.onnx_model import parse_shape_overrides

    shapes = parse_shape_overrides(args.input_shape) or None
    short_total = 0
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            kernels = parallel_extents(onnx.load(model_path(name, workdir)), args.target, shapes)
            print(f"{os.path.basename(name)} ({args.target}): {len(kernels)} kernels")
            short = 0
            for kernel, loops in sorted(kernels.items(), key=lambda kv: min(kv[1], default=0)):
                fewest = min(loops, default=0)
                mark = " <" if fewest < args.goal else ""
                short += bool(mark)
                print(f"  {str(loops):22s} {kernel}{mark}")
            print(f"  {short} of {len(kernels)} kernels offer fewer than {args.goal} chunks in some parallel loop (or have none)")
            short_total += short
    print(f"claim: {short_total} kernels below {args.goal} parallel chunks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
