"""Threads × batch sizes: slimtvm and onnxruntime side by side, per image, with a speed-up plot.

    .venv/bin/python benchmarks/scaling.py [--models resnet18,mobilenet_v2,birealnet18] [--threads 1,2]
        [--batches 1,8] [--runs N] [--bireal-onnx PATH] [--plot docs/scaling.png] [--smoke]

For each model and batch size the model is compiled once with ``--input-shape input=N,...`` (the
ONNX model gets a symbolic batch dimension, so onnxruntime runs the same batch); then for each
thread count slimtvm and onnxruntime run the same numpy batch in turns in this process (median
after warm-up; numpy in, numpy out on both sides). Every slimtvm output is checked against
onnxruntime on the same ONNX model, or the run stops: fp32 ≤ 1e-4 relative; binary networks
output cosine ≥ 0.999, with the top-1 agreement reported (as benchmarks/binary_models.py: where
a float value before a Sign lies within rounding of 0 the two engines may pick different signs,
and random weights give near-tied logits).

- ``resnet18``, ``mobilenet_v2``: fp32 (architectures.py, random weights); the ratio is
  slimtvm / onnxruntime per image (below 1: slimtvm faster).
- ``birealnet18``: Bi-Real Net 18 (birealnet18.py; exported with torch, or ``--bireal-onnx``),
  compiled to binary kernels by slimtvm, against onnxruntime running the float ResNet-18 of the
  same batch: the speed-up a user of a binarized network gets. onnxruntime's run of the binary
  ONNX model is the exactness check.

Prints one row per model × batch × threads, the scaling of each engine from its own time at the
first thread count, and ``claim:`` lines; ``--plot`` writes speed-up against threads for both
engines (matplotlib). ``--smoke`` (CI): the digits CNN and BNN, batches 1 and 2, 1 and 2 threads,
5 runs; checks that the script works, not how fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from binary_models import cosine  # noqa: E402

import slimtvm  # noqa: E402
from slimtvm.runtime.artifact import set_num_threads  # noqa: E402
from slimtvm.runtime.bench import AGREEMENT, onnxruntime_session, relative_difference, time_in_turns  # noqa: E402

EXAMPLES = os.path.join(HERE, "..", "examples")
BINARY_COSINE = 0.999


def with_dynamic_batch(path: str, out: str) -> str:
    """A copy of the ONNX model whose inputs' and outputs' first dimension is symbolic (N)."""
    model = onnx.load(path)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]  # inferred per-batch shapes would contradict other batches
    onnx.save(model, out)
    return out


def model_pairs(names: list, workdir: str, bireal_onnx: str | None, smoke: bool) -> list:
    """[(label, slimtvm's ONNX path, onnxruntime's reference ONNX path for timing, kind)]."""
    if smoke:
        cnn = with_dynamic_batch(os.path.join(EXAMPLES, "digits_cnn.onnx"), os.path.join(workdir, "digits_cnn.onnx"))
        bnn = with_dynamic_batch(os.path.join(EXAMPLES, "digits_bnn.onnx"), os.path.join(workdir, "digits_bnn.onnx"))
        return [("digits_cnn", cnn, cnn, "fp32"), ("digits_bnn vs digits_cnn", bnn, cnn, "binary")]
    from architectures import ARCHITECTURES

    pairs = []
    for name in names:
        if name in ARCHITECTURES:
            raw = os.path.join(workdir, f"{name}-static.onnx")
            onnx.save(ARCHITECTURES[name](seed=0), raw)
            path = with_dynamic_batch(raw, os.path.join(workdir, f"{name}.onnx"))
            pairs.append((name, path, path, "fp32"))
        elif name == "birealnet18":
            if bireal_onnx is None:
                from birealnet18 import export  # needs torch

                bireal_onnx = export(os.path.join(workdir, "birealnet18-static.onnx"))
            binary = with_dynamic_batch(bireal_onnx, os.path.join(workdir, "birealnet18.onnx"))
            raw = os.path.join(workdir, "resnet18-float-static.onnx")
            onnx.save(ARCHITECTURES["resnet18"](seed=0), raw)
            floating = with_dynamic_batch(raw, os.path.join(workdir, "resnet18-float.onnx"))
            pairs.append(("birealnet18 vs float resnet18", binary, floating, "binary"))
        else:
            raise SystemExit(f"unknown model {name!r} (resnet18, mobilenet_v2, birealnet18)")
    return pairs


def measure(label, path, reference, kind, batch, thread_counts, runs, workdir) -> list:
    """Rows (label, kind, batch, threads, onnxruntime ms per image, slimtvm ms per image, runs)."""
    probe = onnxruntime_session(path, 1).get_inputs()[0]
    shape = [batch] + [int(d) for d in probe.shape[1:]]
    artifact = slimtvm.compile(path, os.path.join(workdir, f"{label.split()[0]}-b{batch}.so"), input_shapes={probe.name: tuple(shape)})
    model = artifact.load()
    x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
    ours = next(iter(model.run({probe.name: x}).values()))
    theirs = onnxruntime_session(path, 1).run(None, {probe.name: x})[0]
    difference = relative_difference(ours, theirs)
    top1 = f"top-1 {int(np.sum(ours.argmax(axis=-1) == theirs.argmax(axis=-1)))}/{batch}"
    if kind == "binary":
        agree = cosine(ours, theirs) >= BINARY_COSINE
        difference = f"cosine {cosine(ours, theirs):.6f}, {top1}"
    else:
        agree = difference <= AGREEMENT
    if not agree:
        raise SystemExit(
            f"{label} batch {batch}: slimtvm differs from onnxruntime (max relative difference {relative_difference(ours, theirs):.1e}, cosine {cosine(ours, theirs):.6f}, {top1})"
        )
    rows = []
    for threads in thread_counts:
        set_num_threads(threads)
        session = onnxruntime_session(reference, threads)
        reference_name = session.get_inputs()[0].name
        run_ours, run_theirs = (lambda: model.run({probe.name: x})), (lambda: session.run(None, {reference_name: x}))
        for _ in range(3):
            run_ours(), run_theirs()
        (ours_ms, theirs_ms), count = time_in_turns([run_ours, run_theirs], runs)
        rows.append((label, kind, batch, threads, theirs_ms / batch, ours_ms / batch, count, difference))
        print(
            f"{label:32s} batch {batch:2d}, {threads} thread(s): onnxruntime {theirs_ms / batch:8.2f} ms/image, slimtvm {ours_ms / batch:8.2f} ms/image",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,birealnet18")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    parser.add_argument("--bireal-onnx", help="an exported Bi-Real Net 18 (default: export birealnet18.py with torch)")
    parser.add_argument("--plot", metavar="PNG", help="write speed-up against threads for both engines (needs matplotlib)")
    parser.add_argument("--smoke", action="store_true", help="CI check: digits CNN and BNN, batches 1,2, threads 1,2, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.threads, args.batches, args.runs = "1,2", "1,2", 5
    from cpu_limits import cpu_name

    thread_counts = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, path, reference, kind in model_pairs(args.models.split(","), workdir, args.bireal_onnx, args.smoke):
            for batch in batches:
                rows += measure(label, path, reference, kind, batch, thread_counts, args.runs, workdir)
    print()
    print("| model | batch | threads | onnxruntime ms/image | slimtvm ms/image | slimtvm/onnxruntime | onnxruntime ×threads | slimtvm ×threads |")
    print("|---|---|---|---|---|---|---|---|")
    first = {(r[0], r[2]): r for r in rows if r[3] == thread_counts[0]}
    for label, kind, batch, threads, theirs, ours, _, _ in rows:
        base = first[(label, batch)]
        print(f"| {label} | {batch} | {threads} | {theirs:.2f} | {ours:.2f} | {ours / theirs:.2f} | {base[4] / theirs:.2f} | {base[5] / ours:.2f} |")
    print()
    for label, kind, batch, threads, theirs, ours, runs, difference in rows:
        if kind == "binary":
            print(
                f"claim: {label}, batch {batch}, {threads} thread(s): slimtvm binary {theirs / ours:.2f}x faster per image (median of {runs} runs; against onnxruntime on the binary model: {difference})"
            )
        else:
            print(
                f"claim: {label}, batch {batch}, {threads} thread(s): slimtvm/onnxruntime per image = {ours / theirs:.2f} (median of {runs} runs; max relative difference {difference:.1e})"
            )
    if args.plot:
        _plot(rows, thread_counts, args.plot, cpu_name())
        print(f"wrote {args.plot}")
    return 0


def _plot(rows: list, thread_counts: list, path: str, cpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({(r[0], r[2]) for r in rows})
    figure, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3.4), sharey=True, squeeze=False)
    for axis, (label, batch) in zip(axes[0], series):
        mine = [r for r in rows if (r[0], r[2]) == (label, batch)]
        axis.plot(thread_counts, [mine[0][5] / r[5] for r in mine], "o-", label="slimtvm")
        axis.plot(thread_counts, [mine[0][4] / r[4] for r in mine], "s--", label="onnxruntime")
        axis.plot(thread_counts, [t / thread_counts[0] for t in thread_counts], ":", color="grey", label="linear")
        axis.set_title(f"{label}\nbatch {batch}", fontsize=8)
        axis.set_xlabel("threads")
        axis.set_xticks(thread_counts)
    axes[0][0].set_ylabel("speed-up over 1 thread")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"Scaling with threads ({cpu})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
