"""How far do memory-bound classifiers scale with threads? One Gemm layer, slimtvm and onnxruntime.

    .venv/bin/python benchmarks/classifier_scaling.py [--shapes 512x1000,1280x1000] [--rounds 40]

A batch-1 classifier (ResNet-18's 512 → 1000, MobileNetV2's 1280 → 1000) is a matrix-vector
product: every weight is read once per call and used for one multiply-add, so its time is the
time to stream 2 or 5 MB from wherever the weights are. In a model they are cold: the layers
before them have pushed them out of L2 (1 MB per core here) and some of L3. Both engines run
the same one-node ONNX model (numpy in, numpy out, outputs checked), at 1 and 2 threads in
turns (blocks of 5 calls; one engine after the other, so that neither's spinning threads take
the other's second core), each timed call preceded by reading a 64 MB buffer ("cold": the
weights come from memory) or not ("warm": from the caches). Prints each
engine's median and its speed-up from 1 to 2 threads: what issue 16's "every kernel ≥ 1.8× at 2
threads" meets on a kernel that waits on memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from cpu_limits import cpu_name  # noqa: E402

from slimtvm.runtime.artifact import set_num_threads  # noqa: E402
from slimtvm.runtime.bench import SETTLE_SECONDS, onnxruntime_session, relative_difference  # noqa: E402

EVICTION_BYTES = 64 * 1024 * 1024


def gemm_model(inputs: int, outputs: int, seed: int = 0):
    """A one-node ONNX model: ``y = x · W + b`` with x of shape [1, inputs]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((inputs, outputs)) * 0.05).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def timed(fn, evict) -> float:
    if evict is not None:
        float(evict.sum())  # untimed: reads push the weights out of the caches (no dirty lines left)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="512x1000,1280x1000", help="inputs x outputs, comma-separated")
    parser.add_argument("--rounds", type=int, default=40, help="rounds; each times every engine, thread count and mode 5 times")
    args = parser.parse_args(argv)
    import onnx

    import slimtvm

    print(f"CPU: {cpu_name()}")
    print("| layer | weights | mode | slimtvm 1 thr µs | 2 thr µs | ×2 | onnxruntime 1 thr µs | 2 thr µs | ×2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    eviction = np.ones(EVICTION_BYTES // 4, np.float32)
    with tempfile.TemporaryDirectory() as workdir:
        for shape in args.shapes.split(","):
            inputs, outputs = (int(v) for v in shape.split("x"))
            path = os.path.join(workdir, f"gemm_{shape}.onnx")
            onnx.save(gemm_model(inputs, outputs), path)
            artifact = slimtvm.compile(path, os.path.join(workdir, f"gemm_{shape}.so")).load()
            x = np.random.default_rng(1).standard_normal((1, inputs)).astype(np.float32)
            sessions = {threads: onnxruntime_session(path, threads) for threads in (1, 2)}
            expected = sessions[1].run(None, {"x": x})[0]
            difference = relative_difference(next(iter(artifact.run({"x": x}).values())), expected)
            if difference > 1e-4:
                raise SystemExit(f"{shape}: slimtvm differs from onnxruntime by {difference:.1e}")
            for mode, evict in (("cold", eviction), ("warm", None)):
                times = {(engine, threads): [] for engine in ("slimtvm", "onnxruntime") for threads in (1, 2)}
                # One engine at a time (its thread counts in turns): on 2 cores one engine's
                # spinning workers would take the core the other's second thread needs.
                for engine in ("slimtvm", "onnxruntime"):
                    for _ in range(args.rounds):
                        for threads in (1, 2):
                            set_num_threads(threads)
                            session = sessions[threads]
                            fn = (lambda: artifact.run({"x": x})) if engine == "slimtvm" else (lambda session=session: session.run(None, {"x": x}))
                            time.sleep(SETTLE_SECONDS)
                            fn()  # dropped
                            times[(engine, threads)].extend(timed(fn, evict) for _ in range(5))
                us = {key: statistics.median(values) * 1e6 for key, values in times.items()}
                row = [f"{inputs} → {outputs}", f"{inputs * outputs * 4 / 1e6:.1f} MB", mode]
                for engine in ("slimtvm", "onnxruntime"):
                    row += [f"{us[(engine, 1)]:.0f}", f"{us[(engine, 2)]:.0f}", f"{us[(engine, 1)] / us[(engine, 2)]:.2f}"]
                print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
