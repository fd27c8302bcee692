"""Each conv of a pruned network, inside the network: slimtvm's sparse kernel against its dense
kernel for the same layer, both builds of the same model profiled in one process.

    .venv/bin/python benchmarks/sparse_in_model.py PRUNED.onnx [--threads 1] [--repeat 20]
        [--conv-algorithm direct|auto] [--sparse auto|always] [--smoke]

The model (e.g. ``resnet18_layer90.onnx`` from ``scripts/export_pruned_models.py``: every 3×3
conv of torchvision's ResNet-18 pruned to 90% by ``l1_unstructured``) is compiled twice — as
``compile`` builds it (the per-layer sparse choice) and with ``--sparse never`` (every conv on
the dense kernel; ``--conv-algorithm direct`` by default, the kernel that does every
multiply-add the MAC count says, or ``auto``: Winograd where it applies) — and both run in turns,
round by round (``profile_kernels.builds_in_turns``: TVM's VM instrumentation, wall-clock per
kernel call, medians over ``--repeat`` rounds after warm-up). Each conv's kernel is found by the
shapes of its call's arguments (``conv_times``) and labelled with its ResNet-18 shape
(``sparse_layers.LAYERS``). Unlike the one-layer table of
``sparse_layers.py``, each kernel here reads an input its producer has just written, as in use.
Printed: per conv the two kernel times and their ratio; per shape the smallest ratio; the
layout kernels only the sparse build runs (relayouts between its plain-NCHW sparse region and
blocked dense layers); both whole runs. Outputs of both builds are checked against onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cpu_limits import cpu_name  # noqa: E402
from profile_kernels import builds_in_turns  # noqa: E402
from sparse_layers import LAYERS  # noqa: E402

import slimtvm  # noqa: E402

SMOKE_MODEL = os.path.join(HERE, "..", "tests", "data", "pruned_resnet18_layer90_tiny.onnx")
SHAPE_NAMES = {shape: name for name, shape in LAYERS.items()}
LAYOUT_KERNELS = ("relayout", "layout_transform")


def onnx_convs(path: str) -> list:
    """Per Conv node, in graph order: (in channels, input size, out channels, output size,
    kernel size, nonzero weights)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(path))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    sizes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)}
    convs = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = weights[node.input[1]]
            convs.append((weight.shape[1], sizes[node.input[0]][2], weight.shape[0], sizes[node.output[0]][2], weight.shape[2], int((weight != 0).sum())))
    return convs


def _plain(shape: tuple) -> tuple:
    """(channels, size) of an NCHW or NCHW[b]c tensor shape."""
    return (shape[1] * shape[4], shape[2]) if len(shape) == 5 else (shape[1], shape[2])


def _holds(channels: int, stored: int) -> bool:
    """Whether ``stored`` channels hold ``channels``: the lowering pads channel counts to whole
    blocks (of at most 16), also in plain-layout regions between blocked ones."""
    return channels <= stored < channels + 16


def conv_times(profile: dict, convs: list) -> list:
    """The µs of each of ``convs``' kernel in ``profile``, found by the shapes of each conv call's
    arguments (input, output, and the weight's kernel size — or, for the sparse kernel, its
    number of nonzero weights): kernels do not run in graph order (a block's shortcut conv may
    run after its main path). 0 for a conv without a kernel (all weights zero). Refuses a conv
    call that matches no conv of its input and output shapes."""
    times, taken = [0.0] * len(convs), set()
    for name, us, shapes in zip(profile["names"], profile["calls"], profile["shapes"]):
        if "conv2d" not in name or len(shapes) < 3:
            continue
        (channels, size), (out_channels, out_size) = _plain(shapes[0]), _plain(shapes[-1])
        if "sparse" in name:
            wanted = lambda conv: conv[5] == shapes[1][0]  # noqa: E731 - the values buffer holds the nonzeros
        elif "winograd" in name:
            wanted = lambda conv: conv[4] == 3  # noqa: E731 - transformed weights; 3×3 (the stem's phases are its only other use)
        else:
            wanted = lambda conv: len(shapes[1]) >= 4 and conv[4] == shapes[1][2]  # noqa: E731 - OIHW or OIHW[i]o
        candidates = [
            i
            for i, conv in enumerate(convs)
            if i not in taken and (conv[1], conv[3]) == (size, out_size) and _holds(conv[0], channels) and _holds(conv[2], out_channels)
        ]
        # convs of one shape are alike; the kernel size or nonzeros tell a strided 3×3 conv from its block's 1×1 shortcut
        found = next((i for i in candidates if wanted(convs[i])), candidates[0] if candidates else None)
        if found is None:
            raise SystemExit(f"call {name} {shapes} matches no conv of the model")
        taken.add(found)
        times[found] = us
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a pruned ONNX model (scripts/export_pruned_models.py)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20, help="rounds: an instrumented run of each build per round")
    parser.add_argument("--conv-algorithm", default="direct", choices=["auto", "direct"], help="the dense build's (default direct)")
    parser.add_argument("--sparse", default="auto", choices=["auto", "always"], help="the sparse build's choice (default: compile's own)")
    parser.add_argument("--smoke", action="store_true", help="CI's check: the tests' tiny per-layer 90%% ResNet-18, --sparse always, 2 rounds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.repeat, args.sparse = SMOKE_MODEL, 2, "always"
    if not args.model:
        parser.error("give a pruned ONNX model (or --smoke)")
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference

    with tempfile.TemporaryDirectory() as workdir:
        sparse = slimtvm.compile(args.model, os.path.join(workdir, "sparse.so"), sparse=args.sparse)
        dense = slimtvm.compile(args.model, os.path.join(workdir, "dense.so"), sparse="never", conv_algorithm=args.conv_algorithm)
        inputs = sparse.load().random_inputs()
        reference = onnxruntime_session(args.model, args.threads).run(None, inputs)
        worst = max(relative_difference(ours, theirs) for build in (sparse, dense) for ours, theirs in zip(build.load().run(inputs).values(), reference))
        if worst > 1e-4:
            raise SystemExit(f"outputs differ from onnxruntime by {worst:.1e} (relative)")
        dense_profile, sparse_profile = builds_in_turns([dense, sparse], args.threads, args.repeat)
        layers = [layer for layer in sparse.manifest["layers"] if layer["op"] == "conv2d"]
    convs = onnx_convs(args.model)
    dense_us, sparse_us = conv_times(dense_profile, convs), conv_times(sparse_profile, convs)
    print(
        f"CPU: {cpu_name()}; {os.path.basename(args.model)}, {args.threads} thread(s), median of {args.repeat} rounds; dense build: --sparse never --conv-algorithm {args.conv_algorithm}"
    )
    print(f"{'#':>3} {'layer':12} {'kernel':14} {'dense µs':>9} {'sparse-build µs':>16} {'ratio':>7}")
    ratios: dict = {}
    for index, (layer, conv) in enumerate(zip(layers, convs)):
        shape = (conv[0], conv[1], conv[2], conv[4], conv[1] // conv[3])
        name = SHAPE_NAMES.get(shape, "x".join(str(v) for v in shape))
        ratio = dense_us[index] / sparse_us[index] if sparse_us[index] else float("inf")
        if layer["kernel"] == "sparse_conv2d":
            ratios.setdefault(name, []).append(ratio)
        print(f"{index:>3} {name:12} {layer['kernel']:14} {dense_us[index]:9.0f} {sparse_us[index]:16.0f} {ratio:6.2f}x")
    print("sparse kernel against the dense one, smallest ratio per shape: " + ", ".join(f"{name} {min(r):.2f}x" for name, r in ratios.items()))
    layout = sum(us for name, us in zip(sparse_profile["names"], sparse_profile["calls"]) if any(k in name for k in LAYOUT_KERNELS))
    print(
        f"layout kernels of the sparse build: {layout:.0f} µs; whole runs: dense {dense_profile['run'] / 1e3:.2f} ms, "
        f"sparse build {sparse_profile['run'] / 1e3:.2f} ms ({dense_profile['run'] / sparse_profile['run']:.2f}x); "
        f"outputs within {worst:.1e} of onnxruntime"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
