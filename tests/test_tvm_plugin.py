"""Plain TVM users: the "slimtvm" pipeline is registered with tvm.relax and folds batch norms."""

from __future__ import annotations

import numpy as np
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import bn_positions_model
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import slimtvm.compiler.pipeline  # noqa: F401  (registers the pipeline)
import slimtvm.passes.sequence


def test_tvm_compile_with_the_slimtvm_pipeline():
    assert "slimtvm" in relax.pipeline.PIPELINE_MAP
    model = bn_positions_model(seed=11)
    mod = from_onnx(model)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        executable = tvm.compile(mod, target=target, relax_pipeline="slimtvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    x = np.random.default_rng(0).standard_normal((1, 4, 12, 11)).astype(np.float32)
    result = vm["main"](tvm.runtime.tensor(x))
    names = [o.name for o in model.graph.output]
    outputs = {name: tensor.numpy() for name, tensor in zip(names, result)}
    assert_outputs_match(outputs, onnxruntime_outputs(model, {"x": x}))


def _kernel_names(pipeline, mod, target):
    with target:
        lowered = relax.get_pipeline(pipeline)(mod) if pipeline == "slimtvm" else relax.backend.cpu_generic.get_default_pipeline(target)(mod)
    return [gv.name_hint for gv in lowered.functions]


def test_slimtvm_pipeline_leaves_no_batchnorm_kernel():
    mod = from_onnx(bn_positions_model(seed=12))
    target = tvm.target.Target({"kind": "llvm"})
    assert any("batch_norm" in name for name in _kernel_names("default", mod, target))
    assert not any("batch_norm" in name for name in _kernel_names("slimtvm", mod, target))


def test_pipeline_lists_the_batchnorm_pass():
    passes = slimtvm.passes.sequence.GraphPasses()
    names = [p.info.name for p in passes.sequence()]
    assert "slimtvm.FoldBatchNorm" in names
