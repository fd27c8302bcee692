"""Where does a model lose to onnxruntime? Each slimtvm kernel call next to onnxruntime's node.

    .venv/bin/python benchmarks/layers_vs_onnxruntime.py mobilenet_v2 [--threads 1] [--repeat 30] [--min-us 20]

Compiles the model (as benchmarks/profile_kernels.py does), times every kernel call of the VM run
(TVM's instrument hook, median of ``--repeat`` runs), profiles onnxruntime's session on the same
input (its own node profile, ``enable_profiling``, median per node after warm-up) in the same
rounds, one run of each engine per round (session 40: profiled one after the other, the Llama's
kernels looked 35% faster than onnxruntime's nodes in a stretch where whole runs were 1.1×
slower), and prints
both lists side by side, aligned by order: the i-th slimtvm kernel next to the i-th onnxruntime
compute node (layout reorders, shape ops and the like left out). Both engines fuse a conv with
its bias and activation, so a chain of convs aligns one to one; where the fusions differ (the
classifier head, pooling) the output-shape columns show it, so read the rows whose shapes agree;
where slimtvm runs a depthwise conv and the 1×1 conv after it as one kernel, onnxruntime's two
nodes are summed on its row.
slimtvm's shapes are its blocked layout read back as [N, C, H, W] (C counts padded channels).
Per-call times include the hook's own cost (a few µs); use the totals for the gap, not a claim.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cpu_limits import cpu_name  # noqa: E402
from fp32_vs_onnxruntime import model_path  # noqa: E402
from parallel_chunks import parallel_extents  # noqa: E402
from profile_kernels import profile_beside  # noqa: E402

import slimtvm  # noqa: E402

NOT_COMPUTE = {"Reshape", "Flatten", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "ReorderInput", "ReorderOutput", "Identity", "Cast"}


WARM_UP = 5  # onnxruntime runs before the profiled rounds, dropped from its profile


def profiling_session(path: str, threads: int, workdir: str):
    """An onnxruntime session on ``threads`` threads that records every node of every run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(workdir, "onnxruntime_profile")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnxruntime_nodes(session, warm_up: int = WARM_UP) -> list:
    """[(node name, op type, output shape, median µs)] in execution order, compute nodes only,
    from the profile of ``session``'s runs after its first ``warm_up``."""
    with open(session.end_profiling()) as handle:
        events = json.load(handle)
    times, order = {}, []
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        if name not in times:
            times[name] = []
            shapes = event["args"].get("output_type_shape") or [{}]
            order.append((name, event["args"].get("op_name", "?"), next(iter(shapes[0].values()), [])))
        times[name].append(event["dur"])
    return [(name, op, shape, statistics.median(times[name][warm_up:] or times[name])) for name, op, shape in order if op not in NOT_COMPUTE]


def aligned_nodes(ours: list, theirs: list) -> list:
    """``theirs`` with onnxruntime's two nodes merged (names and ops joined by +, times summed, the
    second's shape) where slimtvm runs two convs as one kernel (a depthwise conv and the 1×1 conv
    after it, schedules/depthwise_projection.py), so that the lists stay aligned one to one."""
    merged, at = [], 0
    for name, _, _ in ours:
        if at >= len(theirs):
            break
        if "depthwise_projection" in name and at + 1 < len(theirs):
            (first, first_op, _, first_us), (second, second_op, shape, second_us) = theirs[at], theirs[at + 1]
            merged.append((f"{first} + {second}", f"{first_op} + {second_op}", shape, first_us + second_us))
            at += 2
        else:
            merged.append(theirs[at])
            at += 1
    return merged + theirs[at:]


def logical_shape(shape: list) -> list:
    """A blocked [N, C/b, H, W, b] output as [N, C, H, W]; other shapes unchanged."""
    return [shape[0], shape[1] * shape[4], shape[2], shape[3]] if len(shape) == 5 else list(shape)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="resnet18, mobilenet_v2, a light-zoo name (light_resnet50, ...) or an .onnx path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30, help="runs profiled per engine; medians are shown")
    parser.add_argument("--target", default="host")
    parser.add_argument("--min-us", type=float, default=0.0, help="only rows where either engine takes at least this long")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        path = args.model if args.model.endswith(".onnx") else model_path(args.model, workdir)
        artifact = slimtvm.compile(path, os.path.join(workdir, "model.so"), target=args.target)
        session, feeds = profiling_session(path, args.threads, workdir), artifact.load().random_inputs()
        for _ in range(WARM_UP):
            session.run(None, feeds)
        # the engines take turns round by round: profiled one after the other, a drift of this
        # VM's speed between them (2× within minutes) read as a gap between the engines
        result = profile_beside(artifact, args.threads, args.repeat, lambda: session.run(None, feeds))
        shapes = parallel_extents(path, args.target, with_output_shapes=True)
        ours = [(name, logical_shape(shapes[name][1]) if name in shapes else [], us) for name, us in zip(result["names"], result["calls"]) if name in shapes]
        theirs = aligned_nodes(ours, onnxruntime_nodes(session))
    print(f"CPU: {cpu_name()}; {args.model}, {args.threads} thread(s), slimtvm target {args.target}, medians of {args.repeat} runs")
    print("| # | slimtvm kernel | shape | µs | onnxruntime node | op | shape | µs | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for index in range(max(len(ours), len(theirs))):
        name, shape, us = ours[index] if index < len(ours) else ("", [], 0.0)
        node, op, node_shape, node_us = theirs[index] if index < len(theirs) else ("", "", [], 0.0)
        if max(us, node_us) < args.min_us:
            continue
        ratio = f"{us / node_us:.2f}" if us and node_us else "-"
        print(f"| {index} | {name} | {shape} | {us:.1f} | {node} | {op} | {list(node_shape)} | {node_us:.1f} | {ratio} |")
    kernels, nodes = sum(us for _, _, us in ours), sum(us for *_, us in theirs)
    print(
        f"kernels: slimtvm {kernels / 1e3:.2f} ms in {len(ours)} calls, onnxruntime {nodes / 1e3:.2f} ms in {len(theirs)} compute nodes; whole run slimtvm {result['run'] / 1e3:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
