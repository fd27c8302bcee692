"""``--low-rank``: how close factorised layers and models run to their multiply-accumulate count.

    .venv/bin/python benchmarks/low_rank.py [--rank 0.25] [--layers l1,...] [--model] [--runs N] [--smoke]

Per ResNet-18 3×3 shape (random weights): the conv alone against its Tucker-2 chain (1×1 → 3×3 →
1×1 at ``--rank`` of both channel counts), each a one-layer model compiled by slimtvm for the
host and timed on this machine in turns (1 thread, device tensors, median), as the speed gate of
``--low-rank`` times them. Prints the MAC reduction, both times, the speed-up, the ratio
speed-up / MAC reduction (1.0: the chain runs at the dense layer's MAC rate), the same for both
models built with ``--conv-algorithm direct``, and the chain artifact's relative difference from
onnxruntime on the chain model.

``--model``: torchvision's ResNet-18 (random weights, benchmarks/architectures.py) compiled as is
and with ``--low-rank rank=R --save-onnx``; both artifacts timed in turns (1 thread, numpy in and
out, median), the factorised one checked against onnxruntime on the saved model; prints the
whole-model MAC reduction (all conv/dense layers, saved model against the original), the speed-up
and their ratio — for the default builds, and for both models built with ``--conv-algorithm
direct`` (the MAC count is the work only where both builds run one algorithm: Winograd does
the dense model's 3×3 stride-1 convs with 4× fewer multiplies). ``--smoke``: CI's check (the l4 shape at 5 runs, no model).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from binary_layers import LAYERS  # noqa: E402 - ResNet-18's 3×3 shapes: (in channels, input size, out channels, stride)


def conv_model(cin: int, size: int, cout: int, stride: int, seed: int = 0) -> onnx.ModelProto:
    """One 3×3 conv (padding 1, a bias as after a folded BN), random weights."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, np.sqrt(2 / (9 * cin)), size=(cout, cin, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=cout).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def layer_rows(names: list, rank: float, runs: int) -> None:
    import onnxruntime as ort

    import slimtvm
    from slimtvm.compiler.layer_timing import layer_timer
    from slimtvm.compress.low_rank_ranks import approximation, choose_ranks, factorised_macs, parse_spec
    from slimtvm.compress.low_rank_rewrite import factorised_model
    from slimtvm.compress.matrix_layers import matrix_layers
    from slimtvm.runtime.bench import relative_difference

    time_pair = layer_timer("host", runs=runs)
    time_direct = layer_timer("host", runs=runs, options={"conv_algorithm": "direct"})
    folder = tempfile.mkdtemp(prefix="slimtvm-low-rank-layers-")
    header = f"{'layer':12s} {'ranks':>9s} {'MACs':>8s} {'→':>8s} {'fewer':>6s} {'dense ms':>9s} {'chain ms':>9s} {'speed-up':>9s} {'ratio':>6s}"
    print(header + "  | direct: dense ms  chain ms  speed-up  ratio | vs onnxruntime")
    for name in names:
        model = conv_model(*LAYERS[name])
        (layer,) = matrix_layers(model)
        choice = choose_ranks(layer, parse_spec(f"rank={rank}"))
        chain = factorised_model(model, {layer: approximation(layer, choice.ranks)[0]})
        dense_ms, chain_ms = time_pair(model, chain)
        direct_dense_ms, direct_chain_ms = time_direct(model, chain)
        cin, size = LAYERS[name][:2]
        x = {"x": np.random.default_rng(1).standard_normal((1, cin, size, size)).astype(np.float32)}
        ours = slimtvm.compile(chain, os.path.join(folder, f"{name}.so")).load().run(x)["y"]
        difference = relative_difference(ours, ort.InferenceSession(chain.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0])
        reduction = layer.macs / factorised_macs(layer, choice.ranks)
        speedup, direct_speedup = dense_ms / chain_ms, direct_dense_ms / direct_chain_ms
        print(
            f"{name:12s} {'×'.join(map(str, choice.ranks)):>9s} {layer.macs / 1e6:7.1f}M {factorised_macs(layer, choice.ranks) / 1e6:7.1f}M "
            f"{reduction:5.2f}× {dense_ms:9.3f} {chain_ms:9.3f} {speedup:8.2f}× {speedup / reduction:6.2f}  | "
            f"{direct_dense_ms:14.3f} {direct_chain_ms:9.3f} {direct_speedup:8.2f}× {direct_speedup / reduction:6.2f} | {difference:.1e}",
            flush=True,
        )


def executed_macs(model: onnx.ModelProto, manifest: dict) -> int:
    """The multiply-adds a build of ``model`` does in its convs and matmuls: each Conv's MACs, over
    the factor its plan in ``manifest`` names for a Winograd kernel (``(4.00× fewer
    multiply-adds)``); the plans come in graph order, one per conv2d (refuses a model whose
    convs do not pair one to one with them: a grouped conv, a rewritten graph)."""
    import re

    from slimtvm.compress.matrix_layers import matrix_layers

    convs = [layer for layer in matrix_layers(model) if layer.op == "Conv"]
    plans = [record["plan"] for record in manifest["layers"] if record["op"] == "conv2d"]
    if len(convs) != len(plans):
        raise ValueError(f"{len(convs)} convs but {len(plans)} conv plans")
    total = sum(layer.macs for layer in matrix_layers(model) if layer.op != "Conv")
    for layer, plan in zip(convs, plans):
        fewer = re.search(r"\(([\d.]+)× fewer multiply-adds\)", plan) if "Winograd" in plan else None
        total += layer.macs / float(fewer.group(1)) if fewer else layer.macs
    return int(total)


def model_row(rank: float, runs: int) -> None:
    import onnxruntime as ort
    from architectures import ARCHITECTURES

    import slimtvm
    from slimtvm.compress.matrix_layers import linear_macs
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import relative_difference, time_in_turns

    folder = tempfile.mkdtemp(prefix="slimtvm-low-rank-")
    original, saved = os.path.join(folder, "resnet18.onnx"), os.path.join(folder, "lr.onnx")
    onnx.save(ARCHITECTURES["resnet18"](seed=0), original)
    dense = slimtvm.compile(original, os.path.join(folder, "dense.so"))
    factorised = slimtvm.compile(original, os.path.join(folder, "lr.so"), low_rank=f"rank={rank}", save_onnx=saved)
    # The same two models with every conv on the direct kernel: Winograd multiplies 2.25–4× less
    # than the MACs count on the dense model's 3×3 stride-1 convs (most of its MACs) and on few of
    # the factorised model's (its 1×1 convs have no fast algorithm), so only builds on one
    # algorithm compare speed with MACs.
    direct = [slimtvm.compile(path, os.path.join(folder, f"direct{i}.so"), conv_algorithm="direct") for i, path in enumerate((original, saved))]
    report = factorised.manifest["low_rank_request"]
    done = sum(entry["factorised"] for entry in report["low_rank_layers"])
    macs_before, macs_after = linear_macs(onnx.load(original)), linear_macs(onnx.load(saved))
    models = [dense.load(), factorised.load(), *(artifact.load() for artifact in direct)]
    x = models[0].random_inputs(0)
    session = ort.InferenceSession(saved, providers=["CPUExecutionProvider"])
    reference = session.run(None, x)[0]
    differences = [relative_difference(m.run(x)[m.output_names[0]], reference) for m in (models[1], models[3])]
    set_num_threads(1)
    for m in models:
        m.run(x)
    times, _ = time_in_turns([lambda m=m: m.run(x) for m in models], runs=runs, block=5, warmup=1)
    reduction = macs_before / macs_after
    print(
        f"ResNet-18 --low-rank rank={rank:g}: {done} of {len(report['low_rank_layers'])} layers factorised; MACs {macs_before / 1e6:.0f}M → "
        f"{macs_after / 1e6:.0f}M ({reduction:.2f}× fewer); vs onnxruntime on the saved model {differences[0]:.1e} (direct build {differences[1]:.1e})"
    )
    for label, (dense_ms, lr_ms) in (("default builds (Winograd where it applies)", times[:2]), ("--conv-algorithm direct, both", times[2:])):
        speedup = dense_ms / lr_ms
        print(f"  {label}: 1 thread {dense_ms:.2f} ms → {lr_ms:.2f} ms ({speedup:.2f}×); speed-up / MAC reduction {speedup / reduction:.2f}")
    executed = [executed_macs(onnx.load(path), artifact.manifest) for path, artifact in ((original, dense), (saved, factorised))]
    cut = executed[0] / executed[1]
    print(
        f"  multiply-adds the default builds execute (Winograd layers at their plans' factor): {executed[0] / 1e6:.0f}M → {executed[1] / 1e6:.0f}M "
        f"({cut:.2f}× fewer); speed-up / that {times[0] / times[1] / cut:.2f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=float, default=0.25, help="fraction of each channel count kept (default 0.25)")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--model", action="store_true", help="also the whole ResNet-18")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per candidate (default 60)")
    parser.add_argument("--smoke", action="store_true", help="CI check: l4 at 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.runs, args.model = "l4", 5, False
    from cpu_limits import cpu_name

    print(f"CPU: {cpu_name()}; slimtvm for the host, 1 thread, rank={args.rank:g}")
    layer_rows(args.layers.split(","), args.rank, args.runs)
    if args.model:
        model_row(args.rank, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
