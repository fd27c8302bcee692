"""Each ResNet-18 3×3 shape and MobileNetV2 1×1 shape at 70–95% zero weights: slimtvm's sparse
kernel, slimtvm's dense kernel and onnxruntime, side by side.

    .venv/bin/python benchmarks/sparse_layers.py [--layers l1,...] [--sparsity 0.7,0.8,0.9,0.95]
        [--threads 1] [--runs N] [--smoke]

For every shape and sparsity, a one-layer ONNX model ``Conv`` (random weights, the smallest
|w| zeroed: the L1 unstructured pattern) is compiled twice by slimtvm — ``--sparse always``
(the direct sparse kernel) and ``--sparse never`` (the dense kernel) — and both libraries and
onnxruntime run that model in turns in one process (same thread count, numpy in and out,
medians after warm-up), outputs checked against onnxruntime. ``--conv-algorithm direct`` builds
the dense one without Winograd (the direct kernel, which does every multiply-add the MAC count
says; the default is compile's own choice). The table prints the three times,
sparse/dense and onnxruntime/sparse speed-ups, and the sparse kernel's useful multiply-adds per
second (nonzero weights × output pixels). The last three columns compare the two kernels alone,
as ``compile``'s sparse choice times them (``compiler/layer_timing.py`` ``kernel_timer``: device
tensors, instrumented runs in turns, the sum of the conv's kernels — the one-layer model's
relayouts into and out of the dense kernel's blocked layout, which a conv inside a network does
not have, and the VM's own work are not counted; ``--runs`` rounds, default 15).
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

# name: (in channels, input size, out channels, kernel, stride)
LAYERS = {
    "l1": (64, 56, 64, 3, 1),
    "l2_stride2": (64, 56, 128, 3, 2),
    "l2": (128, 28, 128, 3, 1),
    "l3_stride2": (128, 28, 256, 3, 2),
    "l3": (256, 14, 256, 3, 1),
    "l4_stride2": (256, 14, 512, 3, 2),
    "l4": (512, 7, 512, 3, 1),
    "l2_down": (64, 56, 128, 1, 2),  # the 1×1 stride-2 shortcut convs
    "l3_down": (128, 28, 256, 1, 2),
    "l4_down": (256, 14, 512, 1, 2),
    "mb_expand_28": (32, 28, 192, 1, 1),
    "mb_project_28": (192, 28, 32, 1, 1),
    "mb_expand_14": (96, 14, 576, 1, 1),
    "mb_project_14": (576, 14, 96, 1, 1),
    "mb_expand_7": (160, 7, 960, 1, 1),
    "mb_project_7": (960, 7, 160, 1, 1),
}


def pruned_conv_model(channels, size, out_channels, kernel, stride, sparsity: float, seed=0):
    """``Conv k×k`` (pad k//2) with the ``sparsity`` share of its smallest weights zeroed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, channels, kernel, kernel)).astype(np.float32)
    cut = int(round(sparsity * weight.size))
    if cut:
        weight.reshape(-1)[np.argsort(np.abs(weight).reshape(-1), kind="stable")[:cut]] = 0
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[kernel // 2] * 4)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), int((weight != 0).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--sparsity", default="0.7,0.8,0.9,0.95")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: about 10 s each)")
    parser.add_argument(
        "--conv-algorithm",
        choices=["auto", "direct"],
        default="auto",
        help="the dense build's: auto (Winograd where it applies, as compile) or direct (every conv on the direct kernel)",
    )
    parser.add_argument("--smoke", action="store_true", help="CI check: one layer, one sparsity, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.sparsity, args.threads, args.runs = "l4", "0.9", "1", 5
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    from cpu_limits import cpu_name

    from slimtvm.compiler.layer_timing import discard_timer

    print(f"CPU: {cpu_name()}; dense build: --conv-algorithm {args.conv_algorithm}")
    header = f"{'layer':<14} {'zeros':>5} {'thr':>3} {'onnxruntime':>12} {'slimtvm dense':>14} {'slimtvm sparse':>15} {'sparse/dense':>13} {'vs ORT':>7} {'G useful MAC/s':>15} {'kernels: dense':>15} {'sparse':>9} {'ratio':>6} {'max diff':>9}"
    print(header)
    worst, timers = 0.0, {}
    try:
        worst = _rows(args, timers)
    finally:
        for timer in timers.values():
            discard_timer(timer)
    print(f"largest relative difference from onnxruntime: {worst:.1e}")
    return 0 if worst <= 1e-4 else 1


def _rows(args, timers: dict) -> float:
    """Print one row per layer, sparsity and thread count; the largest difference from onnxruntime."""
    import onnx

    import slimtvm
    from slimtvm.compiler.layer_timing import KERNEL_ROUNDS, kernel_timer
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_in_turns

    worst = 0.0
    for name in args.layers.split(","):
        channels, size, out_channels, kernel, stride = LAYERS[name]
        for sparsity in (float(v) for v in args.sparsity.split(",")):
            model, nonzeros = pruned_conv_model(channels, size, out_channels, kernel, stride, sparsity)
            out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
            with tempfile.TemporaryDirectory() as workdir:
                path = os.path.join(workdir, "conv.onnx")
                onnx.save(model, path)
                sparse = slimtvm.compile(path, os.path.join(workdir, "sparse.so"), sparse="always").load()
                dense = slimtvm.compile(path, os.path.join(workdir, "dense.so"), sparse="never", conv_algorithm=args.conv_algorithm).load()
                x = np.random.default_rng(1).standard_normal((1, channels, size, size)).astype(np.float32)
                for threads in (int(t) for t in args.threads.split(",")):
                    set_num_threads(threads)
                    session = onnxruntime_session(path, threads)
                    reference = session.run(None, {"x": x})[0]
                    diff = max(relative_difference(engine.run({"x": x})["y"], reference) for engine in (sparse, dense))
                    worst = max(worst, diff)
                    (ort_ms, dense_ms, sparse_ms), _ = time_in_turns(
                        [lambda: session.run(None, {"x": x}), lambda: dense.run({"x": x}), lambda: sparse.run({"x": x})], runs=args.runs, warmup=3
                    )
                    if threads not in timers:
                        timers[threads] = kernel_timer("host", threads, rounds=args.runs or KERNEL_ROUNDS)
                    dense_kernel_ms, sparse_kernel_ms = timers[threads](
                        model, [({"sparse": "never", "conv_algorithm": args.conv_algorithm}, False), ({"sparse": "always"}, True)]
                    )
                    useful = nonzeros * out_size * out_size / (sparse_ms * 1e-3) / 1e9
                    print(
                        f"{name:<14} {100 * sparsity:>4.0f}% {threads:>3} {ort_ms:>9.3f} ms {dense_ms:>11.3f} ms {sparse_ms:>12.3f} ms "
                        f"{dense_ms / sparse_ms:>12.2f}x {ort_ms / sparse_ms:>6.2f}x {useful:>15.1f} "
                        f"{dense_kernel_ms:>12.3f} ms {sparse_kernel_ms:>6.3f} ms {dense_kernel_ms / sparse_kernel_ms:>5.2f}x {diff:>9.1e}",
                        flush=True,
                    )
    return worst


if __name__ == "__main__":
    sys.exit(main())
