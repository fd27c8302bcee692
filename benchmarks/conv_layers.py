"""One conv layer at a time: slimtvm's blocked conv kernel (default tile, or a sweep of tiles)
against onnxruntime's conv of the same shape, side by side in one process, 1 thread.

    .venv/bin/python benchmarks/conv_layers.py [--layers stem,l1,...] [--sweep] [--runs 30]

Shapes: ResNet-18's stem and 3×3 convs, ResNet-50's 1×1 convs, MobileNetV2's expansions.
slimtvm's kernel is timed alone (TVM's time_evaluator, weights warm in cache); onnxruntime runs a
one-node Conv+Relu graph (median of ``--runs`` after warm-up). ``--sweep`` times every register
tile of a candidate list instead of the default: it is how the defaults in
schedules/conv2d_nchwc.py (``default_tile``) were chosen. G MAC/s = multiply-adds per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (in channels, input size, kernel, out channels, stride, padding)
LAYERS = {
    "stem": (3, 224, 7, 64, 2, 3),
    "l1": (64, 56, 3, 64, 1, 1),
    "l2": (128, 28, 3, 128, 1, 1),
    "l3": (256, 14, 3, 256, 1, 1),
    "l4": (512, 7, 3, 512, 1, 1),
    "l4_6": (512, 6, 3, 512, 1, 1),  # l4 without a short tile (6 × 6 pixels): what the 7 × 7 tail costs
    "l2_stride2": (64, 56, 3, 128, 2, 1),
    "l3_stride2": (128, 28, 3, 256, 2, 1),
    "l4_stride2": (256, 14, 3, 512, 2, 1),
    "yolo_stem": (3, 320, 6, 32, 2, 2),  # YOLOv5s's stem and downsampling convs at 320×320
    "yolo_s2_160": (32, 160, 3, 64, 2, 1),
    "yolo_s2_80": (64, 80, 3, 128, 2, 1),
    "yolo_s2_40": (128, 40, 3, 256, 2, 1),
    "yolo_s2_20": (256, 20, 3, 512, 2, 1),
    "r50_1x1_up": (64, 56, 1, 256, 1, 0),
    "r50_1x1_down": (256, 56, 1, 64, 1, 0),
    "r50_1x1_28_up": (128, 28, 1, 512, 1, 0),
    "r50_1x1_28_down": (512, 28, 1, 128, 1, 0),
    "r50_1x1_14": (1024, 14, 1, 256, 1, 0),
    "r50_1x1_7": (2048, 7, 1, 512, 1, 0),
    "r50_1x1_s2_28": (256, 56, 1, 512, 2, 0),  # ResNet-50's (and ResNeXt-50's) strided 1×1 shortcuts
    "r50_1x1_s2_14": (512, 28, 1, 1024, 2, 0),
    "r50_1x1_s2_14_sliced": (512, 14, 1, 1024, 1, 0),  # the same after a stride-2 slice of its input
    "rx50_1x1_56": (256, 56, 1, 256, 1, 0),  # ResNeXt-50's (and ResNet-50 v1.5's) first 1×1 of layer 2
    "r50_3x3_s2_28": (128, 56, 3, 128, 2, 1),  # ResNet-50 v1.5's strided 3×3 convs
    "r50_3x3_s2_14": (256, 28, 3, 256, 2, 1),
    "r50_3x3_s2_7": (512, 14, 3, 512, 2, 1),
    "l1_half_out": (64, 56, 3, 32, 1, 1),  # a block's first conv with half its filters removed (pruned filters)
    "l1_half_in": (32, 56, 3, 64, 1, 1),  # the block's second conv, half its inputs removed
    "mbv2_stem": (3, 224, 3, 32, 2, 1),
    "mbv2_expand_112": (16, 112, 1, 96, 1, 0),
    "mbv2_expand_28": (32, 28, 1, 192, 1, 0),
    "mbv2_expand_14": (64, 14, 1, 384, 1, 0),
    "mbv2_expand_14b": (96, 14, 1, 576, 1, 0),
    "mbv2_expand_7": (160, 7, 1, 960, 1, 0),
    "mbv2_last": (320, 7, 1, 1280, 1, 0),
    "mbv2_expand": (24, 56, 1, 144, 1, 0),
    "mbv2_project": (144, 56, 1, 24, 1, 0),
    "mbv2_project_14": (576, 14, 1, 96, 1, 0),
    "mbv2_project_7": (960, 7, 1, 160, 1, 0),
    # ResNet-18 --low-rank rank=0.25: Tucker-2 chains' 1×1 convs (few output or input channels)
    "lr_in_56": (64, 56, 1, 16, 1, 0),
    "lr_out_56": (16, 56, 1, 64, 1, 0),
    "lr_in_28": (128, 28, 1, 32, 1, 0),
    "lr_in_14": (256, 14, 1, 64, 1, 0),
    "lr_in_7": (512, 7, 1, 128, 1, 0),
    "lr_core_7": (128, 7, 3, 128, 1, 1),
}
SWEEP = [
    (4, 6, False),
    (4, 5, False),
    (4, 3, False),
    (4, 3, True),
    (2, 12, False),
    (2, 10, False),
    (2, 9, False),
    (2, 8, False),
    (2, 7, False),
    (3, 8, False),
    (3, 7, False),
    (3, 5, False),
    (1, 15, False),
    (1, 12, False),
]  # (channel blocks, pixels, channels outside)


def conv_onnx(channels, size, kernel, out_channels, stride, padding, seed=0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((out_channels, channels, kernel, kernel)) * 0.05).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[padding] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def onnxruntime_ms(model, shape, runs) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        session.run(None, {"x": x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def slimtvm_kernel(model, tile=None):
    """The model's conv kernel as one PrimFunc module, scheduled by the default rule or ``tile``,
    with the target and the kernel family (``conv2d``, or ``winograd_conv2d`` for 3×3 stride-1
    convs of 100 pixels or more on 16-lane targets)."""
    from tvm import s_tir

    import slimtvm  # noqa: F401 - sets the thread count
    from slimtvm.schedules.conv2d_nchwc import CONV_BLOCK, Conv2dNCHWc, chunk_rows, schedule_conv2d_nchwc
    from slimtvm.schedules.winograd_conv import WinogradConv
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.tune import extract_tuning_tasks

    spec = resolve_target("host")
    (task,) = [t for t in extract_tuning_tasks(model, spec) if t.kind in ("conv2d", "winograd_conv2d")]
    sch = s_tir.Schedule(task.mod)
    if task.kind == "winograd_conv2d":  # 3×3 stride-1 convs on 16-lane targets: its own default schedule
        if tile is not None:
            raise ValueError("the tile sweep is for the direct kernel")
        sch = WinogradConv(simd_lanes(spec.tvm_target())).schedule(sch)
    elif tile is None:
        sch = Conv2dNCHWc(simd_lanes(spec.tvm_target())).schedule(sch)
    else:
        batch, oc_chunks, out_h, out_w = (int(sch.get(loop).extent) for loop in sch.get_loops(sch.get_sblock(CONV_BLOCK))[:4])
        oc_tile, px, channels_outside = tile
        schedule_conv2d_nchwc(sch, oc_tile, px, chunk_rows(out_h, out_w, batch * (oc_chunks // oc_tile), px), channels_outside)
    return sch.mod, spec.tvm_target(), task.kind


def kernel_difference(mod, target, model, shape, kind: str = "conv2d") -> float:
    """Run the kernel on one input (converted to its blocked layout here, with the ONNX model's
    weights and bias) and return its largest relative difference from onnxruntime's Conv+Relu."""
    import onnxruntime as ort
    import tvm
    from onnx import numpy_helper
    from tvm.s_tir import meta_schedule as ms

    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    weight, bias = weights["w"], weights["b"]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    data_shape, weight_shape, bias_shape, out_shape = ([int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
    block = out_shape[-1]
    out_channels, channels, kh, kw = weight.shape
    padded_out = out_shape[1] * block  # the channel padding adds zero filters up to whole blocks
    weight = np.concatenate([weight, np.zeros((padded_out - out_channels, channels, kh, kw), weight.dtype)])
    bias = np.concatenate([bias, np.zeros(padded_out - out_channels, bias.dtype)])
    out_channels = padded_out
    if kind == "winograd_conv2d":  # NCHW[b]c data, U = G g Gᵀ over (m + 2)² positions
        from slimtvm.schedules.winograd_conv import winograd_weights

        data = x.reshape(1, channels // block, block, *x.shape[2:]).transpose(0, 1, 3, 4, 2)
        packed = winograd_weights(weight, block, weight_shape[0] - 2)
    elif len(data_shape) == 5:  # NCHW[b]c data, OIHW[b]i[b]o weights
        data = x.reshape(1, channels // block, block, *x.shape[2:]).transpose(0, 1, 3, 4, 2)
        packed = weight.reshape(out_channels // block, block, channels // block, block, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    else:  # the plain-input stem: NCHW data, OIHW[b]o weights
        data = x
        packed = weight.reshape(out_channels // block, block, channels, kh, kw).transpose(0, 2, 3, 4, 1)
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (data, packed, bias.reshape(bias_shape[1], block)[None, :, None, None, :])]
    assert [list(a.shape) for a in arrays] == [data_shape, weight_shape, bias_shape]
    result = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    tvm.compile(mod, target=target).jit()["main"](*[tvm.runtime.tensor(a) for a in arrays], result)
    ours = result.numpy().transpose(0, 1, 4, 2, 3).reshape(1, out_channels, *expected.shape[2:])[:, : expected.shape[1]]
    return float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected)))


def slimtvm_ms(mod, target, runs) -> float:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    executable = tvm.compile(mod, target=target).jit()
    infos = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    args = [tvm.runtime.tensor(np.random.default_rng(i).uniform(-1, 1, [int(d) for d in info.shape]).astype("float32")) for i, info in enumerate(infos)]
    return executable.time_evaluator("main", tvm.cpu(), number=5, repeat=runs)(*args).median * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--sweep", action="store_true", help="time every tile of the candidate list")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = "1"
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    print(
        "unequal work, read with care: slimtvm is its conv kernel alone (blocked layout in and out, weights laid out ahead, "
        "TVM time_evaluator); onnxruntime is a whole one-node session (numpy NCHW in and out). Each kernel's output is checked "
        "against onnxruntime's (max relative difference column); benchmarks/fp32_vs_onnxruntime.py times whole models. "
        "(Winograd) rows: the G MAC/s column counts a direct convolution's multiply-adds (the kernel does 2.25× fewer with 2×2 output tiles, 4× with 4×4 ones)."
    )
    print("| layer | shape | onnxruntime ms | slimtvm ms | ratio | slimtvm G MAC/s | onnxruntime G MAC/s | max relative difference |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.layers.split(","):
        channels, size, kernel, out_channels, stride, padding = LAYERS[name]
        out = (size + 2 * padding - kernel) // stride + 1
        macs = out * out * out_channels * channels * kernel * kernel
        model = conv_onnx(channels, size, kernel, out_channels, stride, padding)
        reference = onnxruntime_ms(model, (1, channels, size, size), args.runs)
        tiles = SWEEP if args.sweep else [None]
        for tile in tiles:
            try:
                mod, target, kind = slimtvm_kernel(model, tile)
            except Exception as err:  # noqa: BLE001 - a swept tile that does not fit this shape
                if tile is None:  # the default schedule must always apply
                    raise
                print(f"| {name} {tile} | - | - | - | {type(err).__name__} | - | - | - |")
                continue
            ours = slimtvm_ms(mod, target, args.runs)
            difference = kernel_difference(mod, target, model, (1, channels, size, size), kind)
            label = f"{name} {tile}" if tile else f"{name}{' (Winograd)' if kind == 'winograd_conv2d' else ''}"
            shape = f"{channels}→{out_channels} {kernel}×{kernel}/{stride} @{size}"
            print(
                f"| {label} | {shape} | {reference:.3f} | {ours:.3f} | {ours / reference:.2f} | {macs / ours / 1e6:.1f} | {macs / reference / 1e6:.1f} | {difference:.1e} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
