"""larq-zoo networks exported with tf2onnx: recognised, exact against onnxruntime, and how fast.

    .venv-lce/bin/python scripts/export_larq_models.py /tmp/larq          # NAME.onnx + larq_models.json
    .venv/bin/python benchmarks/larq_models.py /tmp/larq [--models quicknet,...] [--threads 1,2] [--inputs 8]

For each exported model: compiles it with slimtvm (host target unless ``--target``), checks that
the binary convs recognised equal the export's binary ``QuantConv2D`` count, compares the logits
(the input of the final Softmax, made an extra output: a saturated softmax would hide differences)
with onnxruntime on random inputs, allowing only sign flips at rounding distance of 0
(slimtvm.compiler.sign_flips), and times slimtvm against onnxruntime running the same ONNX file
(numpy in, numpy out, same thread count, alternating turns). Prints the CPU. Exits 1 when a count
or an output check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def with_logits_output(model):
    """A copy of ``model`` that also outputs the input of its last Softmax (if any); its name."""
    import onnx

    softmaxes = [node for node in model.graph.node if node.op_type == "Softmax"]
    if not softmaxes:
        return model, model.graph.output[0].name
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    name = softmaxes[-1].input[0]
    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy, name


def cpu_name() -> str:
    with open("/proc/cpuinfo") as file:
        return next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "unknown CPU")


def check_model(path: str, expected: int, target: str, inputs: int, threads: list, runs, workdir: str, flip_distance: float) -> bool:
    import onnx

    import slimtvm
    from slimtvm.compiler.sign_flips import ExactnessTally, compare_with_sign_flips, with_sign_inputs_as_outputs
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, time_side_by_side

    label = os.path.splitext(os.path.basename(path))[0]
    final = onnx.load(path).graph.output[0].name
    probed, logits = with_logits_output(onnx.load(path))
    probed, sign_inputs = with_sign_inputs_as_outputs(probed)
    probed_path = os.path.join(workdir, f"{label}-probed.onnx")
    onnx.save(probed, probed_path)
    artifact = slimtvm.compile(probed_path, os.path.join(workdir, f"{label}.so"), target=target)
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    found, lowered = passes["binarize"]["binary_convs"], passes["binary_blocks"]["binary_convs_lowered"]
    ok = found == lowered == expected
    print(f"{label}: binary convs recognised {found}, lowered {lowered}, binary QuantConv2D in the Keras model {expected}: {'ok' if ok else 'MISMATCH'}")
    probe_runner = artifact.load()
    timed = slimtvm.compile(path, os.path.join(workdir, f"{label}-timed.so"), target=target).load()  # the model as exported (layers fuse without the probes)
    (name,) = timed.input_names
    shape = tuple(timed.manifest["inputs"][0]["shape"])
    reference = onnxruntime_session(probed_path, 1)
    tally = ExactnessTally()
    for seed in range(inputs):
        x = np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)
        theirs = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, {name: x})))
        probe = compare_with_sign_flips(probe_runner.run({name: x}), theirs, sign_inputs, [logits, final], flip_distance)
        tally.add(
            probe, compare_with_sign_flips(timed.run({name: x}), theirs, sign_inputs, [final], flip_distance)
        )  # the timed build: the model's outputs only
    for seed, comparison in tally.failures:
        print(f"  input {seed}: outputs DIFFER: {comparison}")
    ok &= tally.ok
    print(f"  logits vs onnxruntime {tally.summary()}")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for count in threads:
        set_num_threads(count)
        session = onnxruntime_session(path, count)
        run_ours, run_theirs = (lambda: timed.run({name: x})), (lambda: session.run(None, {name: x}))
        for _ in range(3):
            run_ours(), run_theirs()
        ours_ms, theirs_ms, timed_runs = time_side_by_side(run_ours, run_theirs, runs)
        print(
            f"  {count} thread(s): onnxruntime {theirs_ms:.2f} ms, slimtvm {ours_ms:.2f} ms, speed-up {theirs_ms / ours_ms:.2f}x (median of {timed_runs} runs)",
            flush=True,
        )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="what scripts/export_larq_models.py wrote")
    parser.add_argument("--models", default=None, help="comma-separated names (default: all in larq_models.json)")
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--flip-distance", type=float, default=1e-6, help="relative distance of 0 within which a pre-Sign value may flip")
    args = parser.parse_args(argv)
    with open(os.path.join(args.folder, "larq_models.json")) as file:
        counts = json.load(file)
    names = args.models.split(",") if args.models else list(counts)
    print(f"CPU: {cpu_name()}, target {args.target}")
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            ok &= check_model(
                os.path.join(args.folder, f"{name}.onnx"),
                counts[name]["binary_convs"],
                args.target,
                args.inputs,
                [int(t) for t in args.threads.split(",")],
                args.runs,
                workdir,
                args.flip_distance,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
