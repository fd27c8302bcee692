"""Bilinear upsampling as two separable passes (schedules/bilinear_resize.py), against onnxruntime."""

from __future__ import annotations

import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs, scheduled_kernels, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm

PLAIN = [  # (channels, height, width, output height, output width, coordinate mode)
    (21, 14, 14, 224, 224, "half_pixel"),  # a segmentation head's last upsampling
    (3, 15, 9, 31, 20, "align_corners"),
    (5, 7, 8, 14, 16, "asymmetric"),
    (4, 6, 6, 13, 5, "pytorch_half_pixel"),  # narrower: the rows pass downsamples
    (2, 5, 40, 11, 17, "half_pixel"),
    (1, 1, 1, 4, 4, "pytorch_half_pixel"),
]


def _resize(g, x, channels, out_h, out_w, mode):
    sizes = g.const([1, channels, out_h, out_w], "sizes", dtype="int64")
    return g.node("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode=mode)


def _kernel_scripts(model, preset: str) -> str:
    mod = scheduled_kernels(model, preset)
    return "\n".join(func.script() for func in mod.functions.values() if isinstance(func, tvm.tirx.PrimFunc))


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("channels,height,width,out_h,out_w,mode", PLAIN)
def test_plain_bilinear_upsampling_matches_onnxruntime(tmp_path, preset, channels, height, width, out_h, out_w, mode):
    g = GraphBuilder(seed=height)
    x = g.input([1, channels, height, width])
    model = g.model(_resize(g, x, channels, out_h, out_w, mode))
    inputs = {"x": digits_like_input((1, channels, height, width), seed=width)}
    artifact = slimtvm.compile(model, str(tmp_path / "resize.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert 'sblock("resize_rows"' in _kernel_scripts(model, preset)


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_blocked_bilinear_upsampling_between_convs_matches_onnxruntime(tmp_path, preset):
    g = GraphBuilder(seed=3)
    x = g.input([1, 16, 10, 12])
    y = g.relu(g.conv(x, 16, 16, kernel=3, pads=(1, 1, 1, 1)))
    model = g.model(g.conv(_resize(g, y, 16, 20, 24, "half_pixel"), 16, 16, kernel=3, pads=(1, 1, 1, 1)))
    inputs = {"x": digits_like_input((1, 16, 10, 12), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "resize.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    scripts = _kernel_scripts(model, preset)
    start = scripts.rfind("@T.prim_func", 0, scripts.find("resize_rows"))
    kernel = scripts[start:].split("@T.prim_func")[1]
    assert kernel.count("T.vectorized(") == 2  # both passes, over the channel block's lanes


@pytest.mark.parametrize("out_h,out_w,mode", [(5, 16, "half_pixel"), (20, 16, "tf_half_pixel_for_nn")])
def test_resizes_the_kernel_refuses_keep_tvms_compute(tmp_path, out_h, out_w, mode):
    """Fewer output rows than input rows, or a coordinate mode the kernel has not: TVM's resize."""
    g = GraphBuilder(seed=5)
    x = g.input([1, 4, 10, 8])
    sizes = g.const([1, 4, out_h, out_w], "sizes", dtype="int64")
    model = g.model(g.node("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode=mode))
    inputs = {"x": digits_like_input((1, 4, 10, 8), seed=5)}
    artifact = slimtvm.compile(model, str(tmp_path / "resize.so"), target="x86-64")
    if mode != "tf_half_pixel_for_nn":  # onnxruntime has no linear mode of that name
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert 'sblock("resize_rows"' not in _kernel_scripts(model, "x86-64")
