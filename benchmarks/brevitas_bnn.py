"""A Brevitas BNN (export_qonnx) compiled by slimtvm: exact against QONNX's executor, and its speed
against onnxruntime running the same network with the binarizers written as float ops.

    .venv/bin/pip install -e '.[brevitas]'                               # once: torch, brevitas, qonnx
    .venv/bin/python scripts/export_brevitas_bnn.py /tmp/cnv.onnx          # FINN's CNV layout, 3×32×32
    .venv/bin/python benchmarks/brevitas_bnn.py /tmp/cnv.onnx [--threads 1,2] [--inputs 8]

onnxruntime cannot run QONNX's BipolarQuant: its side runs the standard-ONNX form slimtvm's front
end writes (``Where(x ≥ 0, 1, −1)``, the activation scale moved into the next layer's weights,
binary weights as constants), the same values. Outputs are compared with
``qonnx.core.onnx_exec`` allowing only sign flips at rounding distance of 0
(slimtvm.compiler.sign_flips); times are medians of alternating turns, numpy in and out, same
thread count. Prints the CPU. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a QONNX model (scripts/export_brevitas_bnn.py)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--flip-distance", type=float, default=1e-6, help="relative distance of 0 within which a pre-Sign value may flip")
    args = parser.parse_args(argv)
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    import slimtvm
    from slimtvm.compiler.sign_flips import ExactnessTally, compare_with_sign_flips, with_sign_inputs_as_outputs
    from slimtvm.frontend.qonnx_ops import lower_qonnx_ops
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, time_side_by_side

    with open("/proc/cpuinfo") as file:
        cpu = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "unknown CPU")
    print(f"CPU: {cpu}")
    model = onnx.load(args.model)
    weights = {init.name for init in model.graph.initializer}
    (name,) = [v.name for v in model.graph.input if v.name not in weights]
    (output,) = [v.name for v in model.graph.output]
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        artifact = slimtvm.compile(args.model, os.path.join(workdir, "bnn.so"))
        passes = {p["name"]: p for p in artifact.manifest["passes"]}
        print(
            f"slimtvm: {passes['binarize']['binary_convs']} binary convs, {passes['binarize']['binary_dense']} binary dense layers, "
            f"{passes['binary_blocks']['thresholds_fused']} BN → Sign fused as thresholds; compile {artifact.manifest['timings_seconds']['total']:.1f} s"
        )
        probe, sign_inputs = with_sign_inputs_as_outputs(model)
        probe_runner = slimtvm.compile(probe, os.path.join(workdir, "probe.so")).load()
        runner = artifact.load()
        shape = tuple(runner.manifest["inputs"][0]["shape"])
        wrapper = ModelWrapper(model)
        tally = ExactnessTally()
        for seed in range(args.inputs):
            inputs = {name: np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)}
            reference = execute_onnx(wrapper, inputs, return_full_exec_context=True)
            probe = compare_with_sign_flips(probe_runner.run(inputs), reference, sign_inputs, [output], args.flip_distance)
            tally.add(probe, compare_with_sign_flips(runner.run(inputs), reference, sign_inputs, [output], args.flip_distance))
        for seed, comparison in tally.failures:
            print(f"input {seed}: outputs DIFFER from QONNX's executor: {comparison}")
        ok &= tally.ok
        print(f"vs QONNX's executor {tally.summary()}")
        float_ops = os.path.join(workdir, "float_ops.onnx")
        onnx.save(lower_qonnx_ops(model)[0], float_ops)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for threads in (int(t) for t in args.threads.split(",")):
            set_num_threads(threads)
            session = onnxruntime_session(float_ops, threads)
            run_ours, run_theirs = (lambda: runner.run({name: x})), (lambda: session.run(None, {name: x}))
            for _ in range(3):
                run_ours(), run_theirs()
            ours_ms, theirs_ms, runs = time_side_by_side(run_ours, run_theirs, args.runs)
            print(
                f"claim: Brevitas CNV BNN at {threads} thread(s): onnxruntime (binarizers as float ops) {theirs_ms:.3f} ms, slimtvm {ours_ms:.3f} ms: {theirs_ms / ours_ms:.2f}x (median of {runs} runs)",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
