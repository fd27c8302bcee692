"""Where does the time go? Per-kernel profile of a slimtvm artifact (TVM's VM profiler).

    .venv/bin/python benchmarks/profile_kernels.py light_resnet50 [--threads 1] [--top 15] [--db DIR] [--sparse auto|always|never]

Compiles the model (the light-zoo models with seeded random weights, or a path to an .onnx),
runs TVM's profiler, and prints the most expensive kernels with their share of the total.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from fp32_vs_onnxruntime import model_path  # noqa: E402

import slimtvm  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="digits_cnn, a light-zoo name (light_resnet50, ...) or an .onnx path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--db", help="compile with this tuning database (from slimtvm tune)")
    parser.add_argument("--repeat", type=int, default=10, help="instrumented runs; each kernel's median is shown")
    parser.add_argument("--sparse", default="auto", choices=["auto", "always", "never"], help="which convs with zeros run the sparse kernel")
    args = parser.parse_args(argv)
    import tvm
    from tvm import relax

    from slimtvm.runtime.artifact import set_num_threads

    with tempfile.TemporaryDirectory() as workdir:
        path = args.model if args.model.endswith(".onnx") else model_path(args.model, workdir)
        artifact = slimtvm.compile(path, os.path.join(workdir, "model.so"), db=args.db, sparse=args.sparse)
        set_num_threads(args.threads)
        library = tvm.runtime.load_module(artifact.library_path)
        vm = relax.VirtualMachine(library, tvm.cpu())
        model = artifact.load()
        inputs = [tvm.runtime.tensor(a) for a in model.check_inputs(model.random_inputs())]
        rows, started = [], {}

        def instrument(func, name, before, _ret, *_args):
            # the VM calls this around every call instruction; kernels are timed wall-clock
            if before:
                started[name] = time.perf_counter()
            else:
                rows.append((name, (time.perf_counter() - started.pop(name)) * 1e6))
            return 0

        for _ in range(2):
            vm["main"](*inputs)
        vm.set_instrument(instrument)
        per_run = []
        for _ in range(args.repeat):
            rows.clear()
            vm["main"](*inputs)
            run = {}
            for name, duration in rows:
                run[name] = run.get(name, 0.0) + duration
            per_run.append(run)
        calls = len(rows)
        totals = {name: statistics.median(run[name] for run in per_run) for name in per_run[0]}
        total = sum(totals.values())
        print(f"{args.model}: {total / 1e3:.2f} ms in {calls} calls, {args.threads} thread(s), median of {args.repeat} runs per kernel")
        for name, duration in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{duration / 1e3:9.3f} ms  {100 * duration / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
