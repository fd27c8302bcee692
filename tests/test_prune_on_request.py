"""``--prune`` / ``--prune-filters`` (lossy, only when asked): the weights torch.nn.utils.prune
would zero, the error reported, ``--save-onnx`` writing the pruned float model, and the compiled
artifact exact against onnxruntime on that saved model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, fails_cleanly, onnxruntime_outputs
from onnx import numpy_helper
from onnx_builders import GraphBuilder

from slimtvm.cli import main
from slimtvm.compress.prune_float_layers import PruneRequest, prune_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "examples", "digits_cnn.onnx")
RESNET_TINY = os.path.join(REPO, "tests", "data", "pruned_resnet18_filters50_tiny.onnx")


def _torch_modules(weights):
    import torch

    modules = []
    for weight in weights:
        module = (
            torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], bias=False)
            if weight.ndim == 4
            else torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        )
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(weight))
        modules.append(module)
    return modules


def _weights():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for shape in ((16, 8, 3, 3), (32, 16, 1, 1), (10, 32))]


def test_pruning_zeroes_the_smallest_magnitudes_and_filters():
    """The definitions, checked without torch: global — exactly round(0.7·n) zeros over all
    layers and no kept |w| below a pruned one; per layer — the same in each layer; filters —
    round(0.5·O) whole filters zero per conv, none with a larger L1 norm than a kept one."""
    weights = _weights()
    pruned = prune_weights(weights, PruneRequest(amount=0.7), [True, True, False])
    everything = np.concatenate([w.ravel() for w in weights])
    zero = np.concatenate([(p == 0).ravel() for p in pruned])
    assert zero.sum() == round(0.7 * everything.size)
    assert np.abs(everything[zero]).max() <= np.abs(everything[~zero]).min()
    for weight, layer in zip(weights, prune_weights(weights, PruneRequest(amount=0.7, scope="layer"), [True, True, False])):
        zero = layer == 0
        assert zero.sum() == round(0.7 * weight.size) and np.abs(weight[zero]).max() <= np.abs(weight[~zero]).min()
        np.testing.assert_array_equal(layer[~zero], weight[~zero])  # the rest untouched
    for weight, layer, conv in zip(weights, prune_weights(weights, PruneRequest(filters=0.5), [True, True, False]), [True, True, False]):
        dead = (layer.reshape(layer.shape[0], -1) == 0).all(axis=1)
        norms = np.abs(weight.reshape(weight.shape[0], -1)).sum(axis=1)
        if not conv:
            assert not dead.any()
            continue
        assert dead.sum() == round(0.5 * weight.shape[0]) and norms[dead].max() <= norms[~dead].min()


@pytest.mark.parametrize("how", ["global", "layer", "filters"])
def test_pruning_zeroes_what_torch_prune_zeroes(how):
    """The same masks as torch.nn.utils.prune itself (torch is not part of the test install: the
    [torch] extra; the test above checks the definitions without it)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune

    weights = _weights()
    modules = _torch_modules(weights)
    if how == "global":
        prune.global_unstructured([(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=0.7)
        ours = prune_weights(weights, PruneRequest(amount=0.7), [True, True, False])
    elif how == "layer":
        for module in modules:
            prune.l1_unstructured(module, "weight", amount=0.7)
        ours = prune_weights(weights, PruneRequest(amount=0.7, scope="layer"), [True, True, False])
    else:
        for module in modules[:2]:
            prune.ln_structured(module, "weight", amount=0.5, n=1, dim=0)
        ours = prune_weights(weights, PruneRequest(filters=0.5), [True, True, False])
    with torch.no_grad():
        for module, weight in zip(modules, ours):
            np.testing.assert_array_equal(module.weight.numpy() == 0, weight == 0)


def _zero_share(path) -> float:
    model = onnx.load(path)
    used = {node.input[1] for node in model.graph.node if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1}
    arrays = [numpy_helper.to_array(init) for init in model.graph.initializer if init.name in used]
    return sum(int((a == 0).sum()) for a in arrays) / sum(a.size for a in arrays)


def test_prune_saves_the_pruned_model_and_compiles_it_exactly(tmp_path, capsys):
    saved = tmp_path / "pruned.onnx"
    status = main(["compile", RESNET_TINY, "-o", str(tmp_path / "m.so"), "--prune", "0.9", "--save-onnx", str(saved)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "prune on request (90% of weights (global L1 magnitude)): 21 layers pruned, 90.0% of their weights zero, kept float: none" in out
    assert "model output on 8 calibration inputs: relative error" in out and f"wrote the rewritten float model to {saved}" in out
    assert _zero_share(saved) >= 0.899
    import slimtvm

    model = slimtvm.load(str(tmp_path / "m.so"))
    assert model.manifest["prune_request"]["saved_onnx"] == str(saved)
    assert all(layer["relative_error"] > 0 for layer in model.manifest["prune_request"]["layers"])  # lossy, and measured
    inputs = {"image": np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    assert_outputs_match(model.run(inputs), onnxruntime_outputs(str(saved), inputs))


def test_prune_filters_then_weights_per_layer_keeps_named_layers(tmp_path):
    import slimtvm
    from slimtvm.compress.prune_float_layers import PruneRequest

    request = PruneRequest(amount=0.6, scope="layer", filters=0.5, keep_float=("first", "last"))
    saved = tmp_path / "pruned.onnx"
    artifact = slimtvm.compile(DIGITS, str(tmp_path / "m.so"), prune=request, save_onnx=str(saved))
    report = artifact.manifest["prune_request"]
    assert report["kept_float"] == ["/stem/Conv", "/fc/Gemm"] and len(report["layers"]) == 4
    dead = next(entry for entry in artifact.manifest["passes"] if entry["name"] == "dead_channels")
    assert dead["filters_removed"] > 0  # the pruned filters are gone from the compiled model
    pruned = onnx.load(saved)
    weights = {init.name: numpy_helper.to_array(init) for init in pruned.graph.initializer}
    conv_weights = [weights[node.input[1]] for node in pruned.graph.node if node.op_type == "Conv"]
    assert not (conv_weights[0] == 0).any()  # the stem is kept float
    for weight in conv_weights[1:]:
        assert (weight.reshape(weight.shape[0], -1) == 0).all(axis=1).sum() == round(0.5 * weight.shape[0])
    images = np.load(os.path.join(REPO, "examples", "digits_test.npz"))["images"]
    inputs = {"image": images[:1]}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(str(saved), inputs))


def _gemm_only_model(tmp_path) -> str:
    g = GraphBuilder(seed=0)
    x = g.input([1, 8])
    model = g.model(g.gemm(x, 8, 4))
    path = tmp_path / "gemm.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prune", "1.5"], "--prune 1.5: the share to prune must lie strictly between 0 and 1"),
        (["--prune", "0"], "--prune 0: the share to prune must lie strictly between 0 and 1"),
        (["--prune-filters", "-0.2"], "--prune-filters -0.2: the share to prune must lie strictly between 0 and 1"),
        (["--prune-scope", "layer"], "--prune-scope only applies with --prune"),
        (["--save-onnx", "x.onnx"], "--save-onnx writes the model that --prune, --binarize or --low-rank rewrote"),
        (["--prune", "0.5", "--binarize", "weights"], "--binarize and --prune together are not supported"),
        (["--prune", "0.5", "--keep-float", "nosuchlayer"], "--keep-float: 'nosuchlayer' is not a Conv/Gemm/MatMul layer"),
    ],
)
def test_prune_refuses_bad_requests_cleanly(tmp_path, capsys, extra, message):
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), *extra], capsys, tmp_path, message)


def test_prune_filters_on_a_model_without_convs_is_refused(tmp_path, capsys):
    model = _gemm_only_model(tmp_path)
    fails_cleanly(["compile", model, "-o", str(tmp_path / "m.so"), "--prune-filters", "0.5"], capsys, tmp_path, "--prune-filters: the model has no Conv layer")


def test_a_failed_compile_writes_no_saved_model(tmp_path, capsys):
    saved = tmp_path / "sub" / "pruned.onnx"
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--prune", "0.5", "--save-onnx", str(saved)], capsys, tmp_path, "--save-onnx folder")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_matmul_and_gemm_weights_stored_input_major_are_pruned_too(tmp_path, scope):
    """A MatMul's ``[K, N]`` weight and a Gemm's without ``transB`` reach the pruning as moved-axis
    views; the zeros once went to a copy (a ConvNeXt pruned "90%" came out 7.4% zero, its MatMuls
    untouched). Each layer now loses its share (per layer) or the smallest magnitudes of all
    layers go (global), as torch.nn.utils.prune on the ``nn.Linear`` these layers are."""
    import slimtvm
    from slimtvm.compress.prune_float_layers import prune_model

    g = GraphBuilder(seed=7)
    x = g.input([1, 4, 4, 16])
    y = g.node("MatMul", [x, g.const(g.rng.standard_normal((16, 32)), "w")])
    y = g.node("Reshape", [y, g.const(np.array([1, -1], np.int64), "shape", dtype=np.int64)])
    model = g.model(g.gemm(y, 512, 10, trans_b=0))
    pruned, _, _, per_layer, share = prune_model(model, PruneRequest(amount=0.75, scope=scope))
    if scope == "layer":
        assert all(abs(value - 0.75) < 1e-3 for value in per_layer.values()), per_layer
    assert abs(share - 0.75) < 1e-3
    arrays = {init.name: numpy_helper.to_array(init) for init in pruned.graph.initializer}
    weights = [arrays[node.input[1]] for node in pruned.graph.node if node.op_type in ("MatMul", "Gemm")]
    originals = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    before = [originals[node.input[1]] for node in model.graph.node if node.op_type in ("MatMul", "Gemm")]
    for old, new in zip(before, weights):
        kept = new != 0
        if scope == "layer":
            assert np.abs(old[kept]).min() >= np.abs(old[~kept]).max()
    if scope == "global":
        kept = np.concatenate([np.abs(o[n != 0]) for o, n in zip(before, weights)])
        dropped = np.concatenate([np.abs(o[n == 0]) for o, n in zip(before, weights)])
        assert kept.min() >= dropped.max()
    path = tmp_path / "pruned.onnx"
    path.write_bytes(pruned.SerializeToString())
    inputs = {"x": np.random.default_rng(2).standard_normal((1, 4, 4, 16)).astype(np.float32)}
    artifact = slimtvm.compile(str(path), str(tmp_path / "p.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(pruned, inputs))
