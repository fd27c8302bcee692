"""Pruned networks: sparsity detection, the direct sparse conv kernel and the per-layer choice,
against onnxruntime on the original models.

``tests/data/pruned_*_tiny.onnx`` were written by ``scripts/export_pruned_models.py --tiny``
(torch.nn.utils.prune on torchvision's ResNet-18 at width 1/16 and MobileNetV2 at width 0.25,
32×32 inputs, randomised batch norms): global L1 90%, per-layer 90% (stem dense), per-layer 80%
exported without ``prune.remove`` (the graph multiplies ``weight_orig · weight_mask``), and
``ln_structured`` 50% of the filters of every block's first conv.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper, numpy_helper
from sparse_graphs import sparse_graph, sparse_specs

import slimtvm

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PRUNED = {
    "resnet18_global90": "pruned_resnet18_global90_tiny.onnx",
    "resnet18_layer90": "pruned_resnet18_layer90_tiny.onnx",
    "resnet18_layer80_masks": "pruned_resnet18_layer80_masks_tiny.onnx",
    "resnet18_filters50": "pruned_resnet18_filters50_tiny.onnx",
    "mobilenet_v2_global90": "pruned_mobilenet_v2_global90_tiny.onnx",
}
COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _passes(artifact) -> dict:
    return {entry["name"]: entry for entry in artifact.manifest["passes"]}


def _image(model_path: str, seed: int = 0) -> dict:
    return {"image": np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)}


@pytest.mark.parametrize("sparse", ["auto", "always"])
@pytest.mark.parametrize("name", sorted(PRUNED))
def test_pruned_models_match_onnxruntime(tmp_path, name, sparse):
    path = os.path.join(DATA, PRUNED[name])
    artifact = slimtvm.compile(path, str(tmp_path / "model.so"), sparse=sparse)
    inputs = _image(path)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(path, inputs))
    passes = _passes(artifact)
    layers = passes["sparse_layers"]["layers"]
    if sparse == "always":  # every groups = 1 conv with zeros runs sparse (or is all zero)
        assert all(layer["kernel"] in ("sparse_conv2d", "none") or "grouped" in layer["why"] for layer in layers), layers
        # whole zero filters alone are structure, not a sparse kernel's work: filters50 has no candidate
        assert (passes["sparse_layers"]["sparse_convs"] + passes["sparse_layers"]["all_zero_convs"] >= 1) == (name != "resnet18_filters50")
    records = [record for record in artifact.manifest["layers"] if record["op"] == "conv2d"]
    assert sum(record["kernel"] == "sparse_conv2d" for record in records) == passes["sparse_layers"]["sparse_convs"]


def test_weight_masks_fold_to_the_removed_form(tmp_path):
    """Exported without ``prune.remove`` the graph computes ``weight_orig · weight_mask``; after
    folding, the detection sees each layer's 80% zeros (the stem's 0%), as for a removed model."""
    path = os.path.join(DATA, PRUNED["resnet18_layer80_masks"])
    graph_ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "Mul" in graph_ops  # the masks are in the graph
    report = _passes(slimtvm.compile(path, str(tmp_path / "m.so")))["sparsity"]
    convs = [layer for layer in report["layers"] if layer["op"] == "conv2d"]
    assert len(convs) == 20
    assert convs[0]["zeros"] < 0.05  # the stem: dense
    assert all(abs(layer["zeros"] - 0.8) < 0.01 for layer in convs[1:]), [layer["zeros"] for layer in convs]


def test_zero_filters_are_counted(tmp_path):
    """``ln_structured`` 50% on each block's first conv: half of its filters are zero."""
    report = _passes(slimtvm.compile(os.path.join(DATA, PRUNED["resnet18_filters50"]), str(tmp_path / "f.so")))["sparsity"]
    firsts = [layer for layer in report["layers"] if layer["op"] == "conv2d" and layer["zero_filters"]]
    assert len(firsts) == 8
    assert all(layer["zero_filters"] == layer["shape"][0] // 2 for layer in firsts)


def _one_conv(weight, stride=1, pads=(1, 1, 1, 1), dilation=1, batch=1, size=12, bias=True, relu=True):
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], strides=[stride] * 2, pads=list(pads), dilations=[dilation] * 2)]
    nodes.append(helper.make_node("Relu" if relu else "Identity", ["c"], ["y"]))
    initializers = [
        numpy_helper.from_array(weight.astype(np.float32), "w"),
        numpy_helper.from_array(np.linspace(-1, 1, weight.shape[0]).astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, weight.shape[1], size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers if bias else initializers[:1],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inputs = {"x": np.random.default_rng(2).standard_normal((batch, weight.shape[1], size, size)).astype(np.float32)}
    return model, inputs


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
@pytest.mark.parametrize(
    "kernel, stride, pads, dilation, batch",
    [(3, 1, (1, 1, 1, 1), 1, 1), (3, 2, (1, 1, 1, 1), 1, 2), (1, 2, (0, 0, 0, 0), 1, 1), (7, 2, (3, 3, 3, 3), 1, 1), (3, 3, (2, 0, 1, 2), 2, 1)],
)
def test_sparse_kernel_geometries_match_onnxruntime(tmp_path, target, kernel, stride, pads, dilation, batch):
    rng = np.random.default_rng(kernel * 10 + stride)
    weight = rng.standard_normal((24, 20, kernel, kernel))
    weight[rng.random(weight.shape) < 0.85] = 0
    weight[3] = 0  # a zero filter: an empty CSR row
    model, inputs = _one_conv(weight, stride, pads, dilation, batch)
    artifact = slimtvm.compile(model, str(tmp_path / "conv.so"), target=target, sparse="always")
    assert _passes(artifact)["sparse_layers"]["sparse_convs"] == 1
    assert artifact.manifest["layers"][0]["kernel"] == "sparse_conv2d"
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_an_all_zero_conv_is_its_bias(tmp_path):
    model, inputs = _one_conv(np.zeros((16, 8, 3, 3)))
    artifact = slimtvm.compile(model, str(tmp_path / "zero.so"))
    assert _passes(artifact)["sparse_layers"]["all_zero_convs"] == 1
    assert artifact.manifest["layers"][0]["kernel"] == "none"
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_auto_keeps_dense_convs_dense_and_runs_very_sparse_ones_sparse(tmp_path):
    rng = np.random.default_rng(9)
    dense = rng.standard_normal((64, 64, 3, 3))
    dense[rng.random(dense.shape) < 0.3] = 0
    sparse = rng.standard_normal((64, 64, 3, 3))
    sparse[rng.random(sparse.shape) < 0.92] = 0
    small = sparse[:8, :8]  # 92% zero but 0.6 M multiply-adds: the kernel's fixed work would dominate
    for weight, size, expected in ((dense, 32, "dense"), (sparse, 32, "sparse_conv2d"), (small, 32, "dense")):
        model, inputs = _one_conv(weight, size=size)
        artifact = slimtvm.compile(model, str(tmp_path / "c.so"))
        assert _passes(artifact)["sparse_layers"]["layers"][0]["kernel"] == expected
        plan = artifact.manifest["layers"][0]["plan"]  # what inspect shows for the layer
        assert ("zeros, dense: " in plan) == (expected == "dense"), plan
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_a_7x7_conv_whose_dense_kernel_is_winograd_keeps_the_natural_layouts_threshold(tmp_path):
    """On 16-lane targets 3×3 stride-1 convs on 7×7 images run Winograd's dense kernel and the
    sparse one's natural layout: 72% zeros stay dense (the natural layout asks for 75%, more than
    the 70% asked against Winograd on aligned layouts), 80% run sparse. The AVX2 build has no
    Winograd kernel and decides as before."""
    rng = np.random.default_rng(11)
    for zeros, expected in ((0.72, "dense"), (0.8, "sparse_conv2d")):
        weight = rng.standard_normal((256, 256, 3, 3))
        weight[rng.random(weight.shape) < zeros] = 0
        model, inputs = _one_conv(weight, size=7)
        artifact = slimtvm.compile(model, str(tmp_path / "c.so"), target="x86-64-avx512")
        assert _passes(artifact)["kernels"]["by_family"].get("winograd_conv2d", 0) == (expected == "dense")
        layer = _passes(artifact)["sparse_layers"]["layers"][0]
        assert layer["kernel"] == expected, layer
        assert "75% zero weights" in layer["why"] and "Winograd's F(2×2), natural layout" in layer["why"], layer
        if "host" in x86_kernel_presets():  # this host runs AVX-512 builds
            assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_a_conv_whose_dense_kernel_is_winograd_4x4_runs_sparse_only_from_80_percent():
    """64 channels at 20×20 (5 × 5 four-pixel tiles): the dense kernel is Winograd F(4×4, 3×3),
    1.5–1.8× faster than F(2×2), so 75% zeros stay dense (F(2×2)'s 70% would run them sparse)
    and 85% run sparse (decisions of the 16-lane lowering; test_winograd.py checks F(4×4)'s
    outputs)."""
    from slimtvm.compiler.layer_table import recorded_decisions
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.targets.presets import resolve_target

    rng = np.random.default_rng(12)
    for zeros, expected in ((0.75, "dense"), (0.85, "sparse_conv2d")):
        weight = rng.standard_normal((64, 64, 3, 3))
        weight[rng.random(weight.shape) < zeros] = 0
        model, _ = _one_conv(weight, size=20)
        reports, _ = recorded_decisions(import_onnx(model), resolve_target("x86-64-avx512").tvm_target())
        layer = reports["sparse_layers"]["layers"][0]
        assert layer["kernel"] == expected, layer
        assert "80% zero weights" in layer["why"] and "Winograd's F(4×4)" in layer["why"], layer


def test_the_avx2_table_runs_stride_1_convs_sparse_from_60_percent_where_winograd_does_not_take_them():
    """At 65% zeros: a stride-1 3×3 conv on 56×56 pixels stays dense on both x86 builds (their
    dense kernel is Winograd's F(4×4), against which the table asks for 80%); on 6×6 pixels (too
    few for Winograd) the AVX2 build's direct dense kernel loses to the sparse one from 60%
    (sparse) while the AVX-512 build's natural layout asks for 75% (dense); a strided conv keeps
    the natural layout's 75% (dense)."""
    from slimtvm.compiler.layer_table import recorded_decisions
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.targets.presets import resolve_target

    rng = np.random.default_rng(24)
    cases = (
        (64, 56, 1, "x86-64", "dense"),
        (64, 56, 1, "x86-64-avx512", "dense"),
        (256, 6, 1, "x86-64", "sparse_conv2d"),
        (256, 6, 1, "x86-64-avx512", "dense"),
        (64, 56, 2, "x86-64", "dense"),
    )
    for channels, size, stride, preset, expected in cases:
        weight = rng.standard_normal((channels, channels, 3, 3))
        weight[rng.random(weight.shape) < 0.65] = 0
        model, _ = _one_conv(weight, stride=stride, size=size)
        reports, _ = recorded_decisions(import_onnx(model), resolve_target(preset).tvm_target())
        layer = reports["sparse_layers"]["layers"][0]
        assert layer["kernel"] == expected, (channels, size, stride, preset, layer)
        if (size, stride, expected) == (56, 1, "dense"):
            assert "Winograd's F(4×4)" in layer["why"], layer


@pytest.mark.parametrize(
    "shape,nonzeros,stride,expected",
    [
        ((192, 32), 1, 1, "sparse_conv2d"),  # an expansion at 97% zeros
        ((192, 32), 5, 1, "sparse_conv2d"),  # 84%
        ((192, 32), 8, 1, "dense"),  # 75%
        ((96, 192), 30, 1, "sparse_conv2d"),  # a projection at 84%
        ((32, 192), 5, 1, "dense"),  # a projection to 32 channels: at any sparsity
        ((64, 16), 1, 1, "dense"),  # 94% zeros, but 200 K multiply-adds: under the small-conv floor
        ((128, 64), 6, 2, "sparse_conv2d"),  # a strided expansion (ResNet's shortcut) at 91%
        ((128, 64), 16, 2, "dense"),  # 75%
    ],
)
def test_the_table_runs_1x1_convs_with_64_outputs_or_more_sparse_from_80_percent(tmp_path, shape, nonzeros, stride, expected):
    """The table's rule on x86, whose 1×1 layouts have aligned channel planes (what a target
    that cannot be timed here gets; on the host convs near the 80% threshold are timed:
    test_convs_near_a_threshold_are_timed...)."""
    from slimtvm.compiler.layer_table import recorded_decisions
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.targets.presets import resolve_target

    rng = np.random.default_rng(4)
    weight = np.zeros((*shape, 1, 1))
    for row in weight:
        row[rng.choice(shape[1], nonzeros, replace=False)] = rng.standard_normal((nonzeros, 1, 1))
    model, inputs = _one_conv(weight, stride=stride, size=14, pads=(0, 0, 0, 0))
    reports, _ = recorded_decisions(import_onnx(model), resolve_target("host").tvm_target())
    layer = reports["sparse_layers"]["layers"][0]
    assert layer["kernel"] == expected and "dense_kernel_ms" not in layer, layer
    artifact = slimtvm.compile(model, str(tmp_path / "c.so"), sparse="always" if expected == "sparse_conv2d" else "never")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def _conv_with_zeros(tmp_path, zeros: float, seed: int) -> tuple:
    """A 64 → 64 3×3 conv at 20×20 (its dense kernel: Winograd F(4×4), the table's threshold 80%)
    with about ``zeros`` of its weights zero, saved: (model, inputs, path)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((64, 64, 3, 3))
    weight[rng.random(weight.shape) < zeros] = 0
    model, inputs = _one_conv(weight, size=20)
    path = str(tmp_path / f"conv{seed}.onnx")
    onnx.save(model, path)
    return model, inputs, path


def _assert_the_faster_kernel_runs(layer: dict) -> None:
    from slimtvm.lowering.sparse_layers import MEASURED_SPEEDUP

    assert layer["dense_kernel_ms"] > 0 and layer["sparse_kernel_ms"] > 0, layer
    faster = layer["sparse_kernel_ms"] * MEASURED_SPEEDUP <= layer["dense_kernel_ms"]
    assert layer["kernel"] == ("sparse_conv2d" if faster else "dense"), layer


def test_convs_near_a_threshold_are_timed_on_the_host_and_the_faster_kernel_runs(tmp_path, capsys):
    """78% zeros where the table asks for 80% (a 3×3 conv at 20×20, whose dense kernel is
    Winograd F(4×4)): on a target this machine runs, ``auto`` times both kernels and keeps the
    sparse one only where it was at least 1.05× faster; the times are in the report, the layer's
    plan (what ``inspect`` shows) and the compile summary, and the outputs match onnxruntime
    whichever won. A cross target (the AVX-512 preset is not timed even on an AVX-512 host) and
    ``--sparse always`` are not timed."""
    from slimtvm.cli import main
    from slimtvm.compiler.layer_timing import conv_timer

    model, inputs, path = _conv_with_zeros(tmp_path, 0.78, seed=21)
    assert main(["compile", path, "-o", str(tmp_path / "near.so")]) == 0
    assert "(1 timed both ways on this CPU; the table would have chosen the other kernel for " in capsys.readouterr().out
    artifact = slimtvm.load(str(tmp_path / "near.so"))
    report = _passes(artifact)["sparse_layers"]
    layer = report["layers"][0]
    assert report["timed_convs"] == 1 and layer["table_kernel"] == "dense", layer  # 78% < 80%
    _assert_the_faster_kernel_runs(layer)
    plan = artifact.manifest["layers"][0]["plan"]
    assert f"timed: sparse {layer['sparse_kernel_ms']:.3f} ms, dense {layer['dense_kernel_ms']:.3f} ms" in plan, plan
    assert_outputs_match(artifact.run(inputs), onnxruntime_outputs(model, inputs))
    for target, sparse in (("x86-64-avx512", "auto"), ("host", "always")):
        other = slimtvm.compile(model, str(tmp_path / "other.so"), target=target, sparse=sparse)
        assert _passes(other)["sparse_layers"]["timed_convs"] == 0
    assert conv_timer("aarch64") is None and conv_timer("x86-64-avx512") is None


def test_sparse_timed_times_every_conv_the_kernel_takes_and_is_refused_for_a_cross_target(tmp_path, capsys):
    """``--sparse timed``: a conv far from any threshold (30% zeros: the table keeps it dense
    without a doubt) is timed too, the faster kernel runs and the table's choice is recorded;
    for a target this machine does not run, one line and exit status 2."""
    from slimtvm.cli import main

    model, inputs, path = _conv_with_zeros(tmp_path, 0.3, seed=22)
    artifact = slimtvm.compile(path, str(tmp_path / "timed.so"), sparse="timed")
    layer = _passes(artifact)["sparse_layers"]["layers"][0]
    assert layer["table_kernel"] == "dense", layer
    _assert_the_faster_kernel_runs(layer)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert "dense_kernel_ms" not in _passes(slimtvm.compile(path, str(tmp_path / "auto.so")))["sparse_layers"]["layers"][0]
    capsys.readouterr()
    assert main(["compile", path, "-o", str(tmp_path / "x.so"), "--sparse", "timed", "--target", "x86-64-avx512"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sparse timed" in err and "does not run here" in err, err
    assert not os.path.exists(tmp_path / "x.so")


def test_tuning_tasks_follow_the_timed_choice():
    """``tune`` extracts its tasks with the choice ``compile`` makes: a strided 3×3 conv at 68%
    zeros (the table, aligned layout: sparse from 65%; sparse kernels are not tunable) is a tuning task (the dense conv template)
    when the timing — here a timer reporting the dense kernel twice as fast — keeps it dense,
    and none with the table alone."""
    from slimtvm.targets.presets import resolve_target
    from slimtvm.tuning.tune import extract_tuning_tasks

    rng = np.random.default_rng(23)
    weight = rng.standard_normal((64, 64, 3, 3))
    weight[rng.random(weight.shape) < 0.68] = 0
    model, _ = _one_conv(weight, stride=2, size=56)  # 28×28 outputs: the aligned layout
    spec = resolve_target("x86-64-avx512")

    def dense_twice_as_fast(_weight, _geometry, _batch, builds):
        assert [options["sparse"] for options, _ in builds] == ["never", "always"]
        return [1.0, 2.0]

    by_table = extract_tuning_tasks(model, spec)
    timed = extract_tuning_tasks(model, spec, sparse_timer=dense_twice_as_fast)
    assert [task.kind for task in by_table] == [] and [task.kind for task in timed] == ["conv2d"], (by_table, timed)


def test_an_unknown_sparse_mode_is_refused_before_any_work(tmp_path):
    with pytest.raises(slimtvm.SlimError, match="sparse mode 'sometimes': use one of auto, timed, always, never"):
        slimtvm.compile(os.path.join(DATA, PRUNED["resnet18_layer90"]), str(tmp_path / "m.so"), sparse="sometimes")
    assert not os.listdir(tmp_path)


def test_a_failed_timing_leaves_the_choice_to_the_table_and_says_so(tmp_path):
    """A timing build that fails (here a timer that raises) does not fail the compile: the table
    decides (78% zeros, under F(4×4)'s 80%: dense) and the reason says the conv was not timed."""
    import tvm

    from slimtvm.compiler.pipeline import pipeline_for
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.targets.presets import resolve_target

    def failing_timer(_weight, _geometry, _batch, _builds):
        raise RuntimeError("the timing build failed")

    model, _, _ = _conv_with_zeros(tmp_path, 0.78, seed=21)
    target = resolve_target("x86-64-avx512").tvm_target()
    pipeline = pipeline_for(target, timer=failing_timer)
    with target:
        tvm.transform.Sequential(pipeline.to_kernels())(import_onnx(model).mod)
    layer = pipeline.reports()["sparse_layers"]["layers"][0]
    assert layer["kernel"] == "dense" and "dense_kernel_ms" not in layer, layer
    assert layer["why"].endswith("; not timed: RuntimeError: the timing build failed"), layer


def test_compile_prints_the_sparsity_summary(tmp_path, capsys):
    from slimtvm.cli import main

    assert main(["compile", os.path.join(DATA, PRUNED["resnet18_layer90"]), "-o", str(tmp_path / "m.so")]) == 0
    out = capsys.readouterr().out
    assert "of multiply-adds have a zero weight" in out and "sparse_layers:" in out


def test_a_model_without_zeros_is_reported_dense(tmp_path, capsys):
    from slimtvm.cli import main

    model, _ = _one_conv(np.random.default_rng(0).standard_normal((8, 4, 3, 3)) + 5.0)
    path = str(tmp_path / "dense.onnx")
    onnx.save(model, path)
    assert main(["compile", path, "-o", str(tmp_path / "d.so")]) == 0
    out = capsys.readouterr().out
    assert "0.0% of multiply-adds have a zero weight" in out and "sparse_layers: 0 convs run the sparse kernel" in out


SPARSE_EXAMPLES = int(os.environ.get("SLIMTVM_SPARSE_EXAMPLES", "140"))  # split between the x86 kernel variants this host runs


def _check_random_pruned_graphs(examples: int, tmp_path, target: str) -> None:
    @settings(max_examples=examples, **COMMON)
    @given(spec=sparse_specs())
    def check(spec):
        model, inputs = sparse_graph(spec)
        artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=target, sparse="always")
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))

    check()


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_random_pruned_graphs_match_onnxruntime(tmp_path, target):
    """Random sparsity levels 0–100% and patterns (zero filters, zero input channels), padded,
    strided, dilated, grouped and depthwise convs, BN, ReLU, residual adds and concats: the
    sparse kernel (``--sparse always``, so every groups = 1 conv with zeros runs it) gives
    onnxruntime's outputs."""
    _check_random_pruned_graphs(SPARSE_EXAMPLES // max(1, len(x86_kernel_presets())), tmp_path, target)


@pytest.mark.slow
@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_many_random_pruned_graphs_match_onnxruntime(tmp_path, target):
    _check_random_pruned_graphs(1000, tmp_path, target)


@pytest.mark.parametrize(
    "kernel, stride, pads, dilation, align, sets, chunks, grouped, prefetch",
    [
        (3, 1, (1, 1, 1, 1), 1, 0, 1, 1, False, 0),
        (3, 1, (1, 1, 1, 1), 1, 0, 2, 2, False, 0),  # alternate nonzeros in two register blocks
        (3, 1, (1, 1, 1, 1), 1, 16, 1, 1, False, 0),  # aligned: one register block per column offset
        (3, 1, (1, 1, 1, 1), 1, 16, 1, 3, False, 2),  # prefetching the entry 2 on
        (3, 1, (1, 1, 1, 1), 1, 16, 1, 2, True, 0),  # grouped taps: seven tap masks
        (3, 2, (1, 1, 1, 1), 1, 16, 1, 2, False, 6),  # and 6 on, as chosen for ResNet-18's strided convs
        (3, 2, (1, 1, 1, 1), 1, 8, 1, 1, False, 0),
        (3, 2, (1, 1, 1, 1), 1, 8, 1, 2, True, 0),  # grouped, stride 2: three tap masks
        (3, 2, (2, 2, 0, 1), 1, 16, 1, 2, False, 0),  # even left padding: even input columns in column phase 0
        (5, 1, (2, 1, 2, 3), 2, 0, 2, 2, False, 0),  # dilated, asymmetric padding (9 column offsets: natural)
        (5, 2, (2, 1, 2, 3), 1, 16, 1, 2, True, 0),  # 5×5 stride 2, asymmetric padding: 3 column offsets
        (7, 2, (3, 3, 3, 3), 1, 16, 1, 1, False, 0),  # the stem's geometry: four column offsets
        (7, 2, (3, 3, 3, 3), 1, 16, 1, 1, True, 0),  # fifteen tap masks
        (1, 1, (0, 0, 0, 0), 1, 16, 2, 2, False, 0),  # 1×1, channel planes of whole vectors (169 → 176 floats)
        (1, 2, (0, 0, 0, 0), 1, 8, 2, 1, False, 0),  # strided 1×1 (49 → 56)
    ],
)
def test_sparse_kernel_layouts_match_onnxruntime(kernel, stride, pads, dilation, align, sets, chunks, grouped, prefetch):
    """The kernel alone in each form :meth:`SparseConvLayout.choose` may pick — natural with one
    or two accumulator sets, aligned with its shifted column sums, one tap or grouped taps per
    entry, with or without prefetching entries ahead — and input-channel chunks, written to a blocked output (the model-level tests reach
    the aligned form only on images wide enough to pay for rounding their rows)."""
    import tvm

    from slimtvm.conv_geometry import ConvGeometry
    from slimtvm.schedules.sparse_conv import SparseConv, sparse_conv2d_primfunc
    from slimtvm.schedules.sparse_weights import SparseConvLayout, pack_sparse_conv_weight

    rng = np.random.default_rng(kernel + stride + align + sets + chunks)
    weight = rng.standard_normal((16, 12, kernel, kernel)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.8] = 0
    model, inputs = _one_conv(weight, stride, pads=pads, dilation=dilation, bias=False, relu=False, size=13)
    geometry = ConvGeometry.of(13, 13, kernel, kernel, (stride, stride), pads, (dilation, dilation))
    layout = SparseConvLayout(geometry, 12, 16, 32, chunks, align, sets, grouped, prefetch)
    packed = pack_sparse_conv_weight(weight, layout)
    sch = tvm.s_tir.Schedule(sparse_conv2d_primfunc(layout, 1, 0, 8))
    SparseConv(16).schedule(sch)
    library = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), tvm.target.Target("llvm"))
    out = np.zeros((1, 2, geometry.out_h, geometry.out_w, 8), np.float32)
    args = [tvm.runtime.tensor(a) for a in (inputs["x"], packed.values, packed.offsets, packed.row_ptr, packed.value_ptr, out)]
    library(*args)
    blocked = args[-1].numpy()
    plain = blocked.transpose(0, 1, 4, 2, 3).reshape(1, 16, geometry.out_h, geometry.out_w)
    assert_outputs_match({"y": plain}, onnxruntime_outputs(model, inputs))


def test_sparse_layout_choice():
    """AVX-512 takes the aligned form on ResNet-18's wide 3×3 layers and the natural one on its
    7×7 images (rounding 9 columns up to 16 would compute 1.8× the pixels), with grouped taps
    at stride 1 (strided: below 60% zeros); AVX2 keeps the natural form; every choice's register
    blocks fit the target's registers."""
    from slimtvm.conv_geometry import ConvGeometry
    from slimtvm.schedules.sparse_weights import SparseConvLayout

    def layout(size, stride, lanes, zeros=0.9, kernel=3):
        pad = kernel // 2
        return SparseConvLayout.choose(ConvGeometry.of(size, size, kernel, kernel, (stride, stride), (pad,) * 4), 64, 64, lanes, zeros=zeros)

    assert layout(56, 1, 16).align == 16 and layout(56, 2, 16).align == 16 and layout(14, 1, 16).align == 16
    assert layout(7, 1, 16).align == 0 and layout(14, 2, 16).align == 0
    assert all(layout(size, stride, 8).align == 0 for size in (56, 28, 14, 7) for stride in (1, 2))
    # grouped taps: stride 1, strided with fewer zeros; aligned layouts with at most three column offsets only
    assert layout(56, 1, 16).grouped and layout(56, 2, 16, zeros=0.5).grouped and not layout(56, 2, 16).grouped
    # 1×1 convs: aligned channel planes on x86 (8 and 16 lanes), two accumulator sets; NEON natural
    for stride in (1, 2):
        for lanes in (8, 16):
            pointwise = layout(14, stride, lanes, kernel=1)
            assert (pointwise.align, pointwise.sums, pointwise.accumulator_sets, pointwise.grouped, pointwise.prefetch) == (lanes, 1, 2, False, 0)
            assert pointwise.channel_stride % lanes == 0 and pointwise.cols_q == 14 // stride  # rows as they are
    assert layout(14, 1, 4, kernel=1).align == 0
    # the prefetch: 16-lane aligned blocks of single taps only
    assert layout(56, 2, 16).prefetch and not layout(56, 1, 16).prefetch and not layout(56, 2, 16, zeros=0.5).prefetch and not layout(14, 2, 16).prefetch
    assert not layout(7, 1, 16, zeros=0.5).grouped and not layout(56, 1, 8, zeros=0.5).grouped
    assert layout(224, 2, 16, zeros=0.5, kernel=7).align and not layout(224, 2, 16, zeros=0.5, kernel=7).grouped
    for lanes, registers in ((8, 16), (16, 32)):
        for size in (56, 28, 14, 7):
            for zeros in (0.5, 0.9):
                chosen = layout(size, 1, lanes, zeros)
                vectors = chosen.vector // lanes
                blocks = chosen.sums * vectors + chosen.sums - 1 if chosen.align else chosen.accumulator_sets * vectors  # one more per shifted sum
                # and the broadcast weight (grouped: one per block and the shared input vector)
                assert blocks + (chosen.sums + 1 if chosen.grouped else 1) <= registers, chosen


def test_zen4_targets_take_8_lane_aligned_blocks_where_16_lane_rows_round_too_much(tmp_path):
    """Zen 4 runs 16-lane instructions as two 8-lane halves, so on its target a 256 → 512 conv on
    14×14 pixels, stride 2 (7 + 1 phase columns, 16 once rounded for 16-lane vectors) takes the
    aligned form at 8 lanes — 56 pixels in seven vectors — where other AVX-512 targets keep the
    natural one; the build matches onnxruntime wherever this machine runs Zen 4 code."""
    import tvm

    from slimtvm.conv_geometry import ConvGeometry
    from slimtvm.schedules.sparse_weights import SparseConvLayout
    from slimtvm.targets.kernel_target import KernelTarget

    def kernel_target(mcpu):
        return KernelTarget.of(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}))

    assert kernel_target("znver4").half_width_vectors
    assert not kernel_target("skylake-avx512").half_width_vectors and not kernel_target("haswell").half_width_vectors
    geometry = ConvGeometry.of(14, 14, 3, 3, (2, 2), (1, 1, 1, 1))
    halves = SparseConvLayout.choose(geometry, 256, 512, 16, zeros=0.9, half_width_blocks=True)
    assert (halves.align, halves.vector, halves.pixels) == (8, 56, 56)
    assert SparseConvLayout.choose(geometry, 256, 512, 16, zeros=0.9).align == 0
    assert SparseConvLayout.choose(ConvGeometry.of(28, 28, 3, 3, (2, 2), (1, 1, 1, 1)), 64, 128, 16, zeros=0.9, half_width_blocks=True).align == 16

    if str(tvm.get_global_func("target.llvm_get_system_cpu")()) != "znver4":
        return
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((64, 32, 3, 3))
    weight[rng.random(weight.shape) < 0.9] = 0
    model, inputs = _one_conv(weight, stride=2, size=14)
    artifact = slimtvm.compile(model, str(tmp_path / "conv.so"), target="host", sparse="always")
    assert "(8-lane vectors)" in artifact.manifest["layers"][0]["plan"]
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_tune_leaves_sparse_kernels_out(tmp_path):
    """MetaSchedule cannot reshape the sparse kernel, and its random inputs would be offsets out
    of range (a crashed measurement once): a model whose only conv runs sparse has nothing to tune."""
    from slimtvm.errors import SlimError

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((64, 64, 3, 3))
    weight[rng.random(weight.shape) < 0.92] = 0
    model, _ = _one_conv(weight, size=32)
    path = str(tmp_path / "sparse.onnx")
    onnx.save(model, path)
    with pytest.raises(SlimError, match="no kernel slimtvm can tune") as err:
        slimtvm.tune(path, str(tmp_path / "db"), trials=2, progress=False)
    assert "sparse_conv2d" not in str(err.value)
