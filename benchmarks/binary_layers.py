"""Each 3×3 binary conv shape of ResNet-18 against onnxruntime's fp32 conv of the same shape.

    .venv/bin/python benchmarks/binary_layers.py [--threads 1,2] [--runs N] [--layers l1,...] [--smoke]

For every shape, a one-layer ONNX model ``Sign → Conv`` with weights ±α per output channel is
compiled by slimtvm (whole library: sign packing, XNOR/popcount, scale and padding correction),
and checked against onnxruntime running that same model (bit-exact counts, so ≤ 1e-5). Then the
library is timed with onnxruntime running the plain fp32 ``Conv`` of the same shape in the same
process (one engine after the other, 30 warm-up runs each, medians of 200), and the table prints both times, the speed-up, and
slimtvm's binary multiply-adds per second, and that rate as a share of the host's limit
(benchmarks/cpu_limits.py, measured at the start of the run on this host).
``--smoke``: CI's check that it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# name: (in channels, input size, out channels, stride)
LAYERS = {
    "l1": (64, 56, 64, 1),
    "l2_stride2": (64, 56, 128, 2),
    "l2": (128, 28, 128, 1),
    "l3_stride2": (128, 28, 256, 2),
    "l3": (256, 14, 256, 1),
    "l4_stride2": (256, 14, 512, 2),
    "l4": (512, 7, 512, 1),
}


def conv_model(channels, size, out_channels, stride, binary: bool, seed=0):
    """``[Sign →] Conv 3×3 pad 1``; binary weights are ±α per output channel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, channels, 3, 3)).astype(np.float32)
    if binary:
        alpha = np.abs(weight).mean(axis=(1, 2, 3), keepdims=True).astype(np.float32)
        weight = np.where(weight >= 0, alpha, -alpha).astype(np.float32)
    nodes = [helper.make_node("Conv", ["s" if binary else "x", "w"], ["y"], kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])]
    if binary:
        nodes.insert(0, helper.make_node("Sign", ["x"], ["s"]))
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default 200)")
    parser.add_argument("--smoke", action="store_true", help="CI check: one layer, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.threads, args.runs = "l4", "1", 5
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import onnx
    from cpu_limits import cpu_name, measure

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_side_by_side

    limits = measure("host")
    print(f"CPU: {cpu_name()}; {limits.describe()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.layers.split(","):
            channels, size, out_channels, stride = LAYERS[name]
            paths = {}
            for kind in ("binary", "float"):
                paths[kind] = os.path.join(workdir, f"{name}-{kind}.onnx")
                onnx.save(conv_model(channels, size, out_channels, stride, kind == "binary"), paths[kind])
            model = slimtvm.compile(paths["binary"], os.path.join(workdir, f"{name}.so")).load()
            # one 64-byte-aligned array feeds both engines: slimtvm reads it in place (any other
            # array it copies first), onnxruntime reads any contiguous array in place
            x = slimtvm.aligned_array((1, channels, size, size), np.float32)
            x[...] = np.random.default_rng(1).standard_normal(x.shape)
            ours = model.run({"x": x})["y"]
            exact = relative_difference(ours, onnxruntime_session(paths["binary"], 1).run(None, {"x": x})[0])
            out = (size - 1) // stride + 1
            macs = out * out * out_channels * channels * 9
            for threads in (int(t) for t in args.threads.split(",")):
                set_num_threads(threads)
                session = onnxruntime_session(paths["float"], threads)
                run_ours, run_theirs = (lambda: model.run({"x": x})), (lambda: session.run(None, {"x": x}))  # numpy in and out on both sides
                for _ in range(5):
                    run_ours(), run_theirs()
                # one engine after the other (30 warm-up runs each): with 2 threads, the other
                # engine's spinning workers slow sub-millisecond kernels for ~20 runs
                runs = args.runs or 200
                ours_ms, theirs_ms, runs = time_side_by_side(run_ours, run_theirs, runs, block=runs, warmup=30)
                rows.append((name, channels, size, out_channels, stride, threads, theirs_ms, ours_ms, macs, exact, runs))
                print(
                    f"{name}: {threads} thread(s) onnxruntime fp32 {theirs_ms:.3f} ms, slimtvm binary {ours_ms:.3f} ms, speed-up {theirs_ms / ours_ms:.2f}x",
                    flush=True,
                )
    print()
    print(
        "| layer | shape | threads | onnxruntime fp32 ms | slimtvm binary ms | speed-up | slimtvm G binary MAC/s | of the host's limit × threads | max rel. diff vs ORT (binary model) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c, size, o, stride, threads, theirs, ours, macs, exact, _ in rows:
        rate = macs / ours / 1e6
        share = rate / (limits.binary_gmacs * threads)
        print(
            f"| {name} | {c}→{o} 3×3/{stride} @{size} | {threads} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x | {rate:.0f} | {share:.0%} | {exact:.1e} |"
        )
    print()
    for name, c, size, o, stride, threads, theirs, ours, macs, exact, runs in rows:
        print(
            f"claim: binary {name} ({c}→{o} 3×3/{stride} @{size}) at {threads} thread(s): {theirs / ours:.2f}x faster than onnxruntime fp32 (median of {runs} runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
