"""YOLOv5s and YOLOv8n (ultralytics, random weights) compiled by slimtvm against onnxruntime on the same ONNX files.

    bash scripts/setup_detector_venv.sh
    .venv-detectors/bin/python scripts/export_yolo.py --out /tmp/yolo --sizes 320,640
    .venv/bin/python benchmarks/detectors.py --onnx-dir /tmp/yolo [--sizes 320,640] [--threads 1,2] [--runs N]

For every ``{model}-{size}.onnx`` in the folder (``yolov5s``, ``yolov8n`` and the network-slimmed
``yolov5s-slim50``): compiles it untuned from the file as exported (no user-side simplification),
checks the output against onnxruntime on the same file (largest difference relative to the
output's largest magnitude, over 3 random images), then times both engines side by side in one
process at each thread count — numpy in, numpy out on both sides, medians of alternating blocks
after warm-up — and prints the ratio slimtvm time / onnxruntime time (below 1: slimtvm faster).
``--smoke`` (CI): one small synthetic detector-like graph from the test builders, 1 thread,
5 runs; checks that the script works, not how fast.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)


def detector_files(onnx_dir: str, sizes: list) -> list:
    """``(label, path)`` for each exported detector of the requested sizes, in a stable order."""
    found = []
    for size in sizes:
        for path in sorted(glob.glob(os.path.join(onnx_dir, f"*-{size}.onnx"))):
            found.append((os.path.basename(path)[: -len(".onnx")], path))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-dir", help="folder written by scripts/export_yolo.py")
    parser.add_argument("--sizes", default="320")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    parser.add_argument("--smoke", action="store_true", help="CI check: a small detector-like graph, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    from cpu_limits import cpu_name, measure

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_side_by_side

    print(f"CPU: {cpu_name()}; {measure('host').describe()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.smoke:
            import onnx

            sys.path.insert(0, os.path.join(HERE, "..", "tests"))
            from detector_graphs import yolo_like_detector

            path = os.path.join(workdir, "yolo_like.onnx")
            onnx.save(yolo_like_detector(), path)
            files, args.threads, args.runs = [("yolo-like (smoke)", path)], "1", 5
        else:
            if not args.onnx_dir or not os.path.isdir(args.onnx_dir):
                print("detectors.py: --onnx-dir must name the folder scripts/export_yolo.py wrote", file=sys.stderr)
                return 2
            files = detector_files(args.onnx_dir, args.sizes.split(","))
            if not files:
                print(f"detectors.py: no *-{{{args.sizes}}}.onnx in {args.onnx_dir}", file=sys.stderr)
                return 2
        for label, path in files:
            artifact = slimtvm.compile(path, os.path.join(workdir, f"{label}.so"))
            model = artifact.load()
            (name,) = model.input_names
            reference = onnxruntime_session(path, 1)
            difference = 0.0
            for seed in range(3):
                x = slimtvm.aligned_array(model.random_inputs(seed)[name].shape, np.float32)
                x[...] = np.random.default_rng(seed).random(x.shape)  # images in [0, 1), as YOLO takes them
                for ours, theirs in zip(model.run({name: x}).values(), reference.run(None, {name: x})):
                    difference = max(difference, relative_difference(ours, theirs))
            dead = next((p for p in artifact.manifest["passes"] if p["name"] == "dead_channels"), {})
            print(
                f"{label}: compiled in {artifact.manifest['timings_seconds']['total']:.1f} s, max relative difference vs onnxruntime {difference:.1e}"
                + (f", {dead.get('filters_removed', 0)} filters removed exactly" if dead else ""),
                flush=True,
            )
            for threads in (int(t) for t in args.threads.split(",")):
                set_num_threads(threads)
                session = onnxruntime_session(path, threads)
                run_ours, run_theirs = (lambda: model.run({name: x})), (lambda: session.run(None, {name: x}))  # numpy in and out on both sides
                for _ in range(3):
                    run_ours(), run_theirs()
                ours_ms, theirs_ms, runs = time_side_by_side(run_ours, run_theirs, args.runs)
                rows.append((label, threads, theirs_ms, ours_ms, runs, difference))
                print(f"{label}: {threads} thread(s) onnxruntime {theirs_ms:.2f} ms, slimtvm {ours_ms:.2f} ms, ratio {ours_ms / theirs_ms:.2f}", flush=True)
    print()
    print("| model | threads | onnxruntime ms | slimtvm untuned ms | ratio (slimtvm / onnxruntime) | max rel. diff |")
    print("|---|---|---|---|---|---|")
    for label, threads, theirs, ours, _, difference in rows:
        print(f"| {label} | {threads} | {theirs:.2f} | {ours:.2f} | {ours / theirs:.2f} | {difference:.1e} |")
    print()
    for label, threads, theirs, ours, runs, difference in rows:
        print(
            f"claim: {label} at {threads} thread(s), untuned: slimtvm/onnxruntime = {ours / theirs:.2f} (median of {runs} runs; max relative difference {difference:.1e})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
