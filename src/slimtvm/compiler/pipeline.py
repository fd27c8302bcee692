"""The one place that puts slimtvm's steps in order, and the TVM pipeline registration.

graph passes (passes/sequence.py: Relax → Relax, detection and folding) → lowering to kernels
(lowering/sequence.py: layouts, binary kernels, legalization, fusion) → schedules and TVM's CPU
lowering. :func:`relax_pipeline` returns all of it as one ``tvm.transform.Pass`` usable as
``tvm.compile(mod, target, relax_pipeline=...)``. Importing this module registers it as the
named pipeline ``"slimtvm"``, so plain TVM users can write
``tvm.compile(mod, target, relax_pipeline="slimtvm")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from ..lowering.sequence import LoweringPasses
from ..lowering.sparse_layers import SparseLayers
from ..lowering.winograd_layers import WinogradLayers
from ..passes.sequence import GraphPasses
from ..targets.kernel_target import KernelTarget

PIPELINE_NAME = "slimtvm"


@dataclass
class Pipeline:
    """Every step of one compile for one target, as instances whose reports are read after."""

    graph: GraphPasses
    lowering: LoweringPasses

    def to_kernels(self) -> list:
        """From the imported model to the fused kernels (what ``tune`` extracts tasks from)."""
        return self.graph.sequence() + self.lowering.to_kernels()

    def reports(self) -> dict:
        """Every step's report, keyed by step name (for the manifest)."""
        return {**self.graph.reports(), **self.lowering.reports()}

    @property
    def layer_records(self) -> list:
        """One :class:`~slimtvm.lowering.layer_records.LayerRecord` per conv2d/matmul, in order."""
        return self.lowering.split_grouped.records_per_layer(self.lowering.lower_binary.records)


def pipeline_for(tvm_target, sparse: str = "auto", timer=None, conv_algorithm: str = "auto") -> Pipeline:
    """Fresh instances of every step for ``tvm_target`` (a ``tvm.target.Target``); ``sparse``:
    which convs run the sparse kernel (:data:`~slimtvm.lowering.sparse_layers.SPARSE_MODES`);
    ``timer`` (slimtvm.compiler.layer_timing.conv_timer, for a target that runs here): times
    the convs near the sparse choice's thresholds (without one, the table decides them);
    ``conv_algorithm`` (:data:`~slimtvm.lowering.winograd_layers.CONV_ALGORITHMS`): ``direct``
    keeps the Winograd kernel out."""
    target = KernelTarget.of(tvm_target)
    winograd = WinogradLayers(target.lanes, enabled=conv_algorithm != "direct")
    sparse_layers = SparseLayers(target.lanes, sparse, winograd, timer, target.half_width_vectors)
    return Pipeline(GraphPasses(), LoweringPasses(target, sparse=sparse_layers, winograd=winograd))


def relax_pipeline(target=None) -> tvm.transform.Pass:
    """slimtvm's graph passes, lowering and schedules followed by TVM's CPU lowering, as one
    pass; ``target`` defaults to the current one (refused when there is none)."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.Pipeline")
    def _pipeline(mod, _ctx):
        chosen = target or tvm.target.Target.current()
        if chosen is None:
            raise ValueError("the slimtvm pipeline needs a target: pass one or call it inside `with target:`")
        pipeline = pipeline_for(chosen)
        return tvm.transform.Sequential(pipeline.to_kernels() + pipeline.lowering.to_code(chosen))(mod)

    return _pipeline


def _register() -> None:
    registry = relax.pipeline.PIPELINE_MAP if hasattr(relax.pipeline, "PIPELINE_MAP") else None
    if registry is not None and PIPELINE_NAME in registry:
        return
    relax.pipeline.register_pipeline(PIPELINE_NAME)(lambda target=None: relax_pipeline(target))


_register()
