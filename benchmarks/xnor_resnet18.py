"""ResNet-18 binarized on request in XNOR-Net block order against slimtvm's float build of it.

    .venv/bin/python benchmarks/xnor_resnet18.py [--threads 1,2] [--runs N] [--smoke]

torchvision's ResNet-18 (random weights, benchmarks/architectures.py) is compiled as is and with
``--binarize weights+activations --calibration C.npz --save-onnx`` (C: 8 seeded normal images;
stem and classifier kept float). Prints how many convs run the binary kernels, checks the binary
artifact against onnxruntime on the saved model (on a calibration image, where no value lies
within rounding of a binarizer threshold), and times both artifacts and onnxruntime's float
model in turns in this process (numpy in and out, median after warm-up): the speed-up of the
binarized build over the float one. ``--smoke``: CI's check (the binary build only, checked and
timed against onnxruntime, 1 thread, 5 runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="CI check: the binary build only, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.threads, args.runs = "1", 5
    import onnxruntime as ort
    from architectures import ARCHITECTURES
    from cpu_limits import cpu_name

    import slimtvm
    from slimtvm.compress.binarize_float_layers import BinarizeRequest
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import relative_difference, time_in_turns

    folder = tempfile.mkdtemp(prefix="slimtvm-xnor-")
    original, saved, calibration = (os.path.join(folder, name) for name in ("resnet18.onnx", "xnor.onnx", "calibration.npz"))
    onnx.save(ARCHITECTURES["resnet18"](seed=0), original)
    samples = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    np.savez(calibration, input=samples)
    float_build = None if args.smoke else slimtvm.compile(original, os.path.join(folder, "float.so"))
    request = BinarizeRequest("weights+activations", calibration=calibration)
    binary_build = slimtvm.compile(original, os.path.join(folder, "xnor.so"), binarize=request, save_onnx=saved)
    binarize = next(p for p in binary_build.manifest["passes"] if p["name"] == "binarize")
    layers = len(binary_build.manifest["binarize_request"]["layers"])
    binary = binary_build.load()
    models = [binary] if float_build is None else [float_build.load(), binary]
    x = {binary.input_names[0]: samples[:1]}
    output = binary.output_names[0]
    difference = relative_difference(binary.run(x)[output], ort.InferenceSession(saved, providers=["CPUExecutionProvider"]).run(None, x)[0])
    print(f"CPU: {cpu_name()}")
    print(f"ResNet-18 --binarize weights+activations: {layers} layers binarized, {binarize['binary_convs']} run the binary conv kernels")
    print(f"binary artifact vs onnxruntime on the saved model: {difference:.1e}")
    options = ort.SessionOptions()
    for threads in [int(t) for t in args.threads.split(",")]:
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"])
        set_num_threads(threads)
        runners = [lambda m=m: m.run(x) for m in models] + [lambda: session.run(None, x)]
        for run in runners:
            run()
        times, runs = time_in_turns(runners, runs=args.runs, block=5, warmup=1)
        binary_ms, ort_ms = times[-2:]
        versus_float = "" if float_build is None else f"slimtvm float {times[0]:.2f} ms, "
        speedup = "" if float_build is None else f" ({times[0] / binary_ms:.2f}× faster)"
        print(
            f"{threads} thread(s), {runs} runs: {versus_float}slimtvm XNOR {binary_ms:.2f} ms{speedup}, "
            f"onnxruntime float {ort_ms:.2f} ms ({ort_ms / binary_ms:.2f}×)"
        )
    return 0 if difference <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
