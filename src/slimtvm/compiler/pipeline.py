"""The one place that lists slimtvm's graph passes in order, and the TVM pipeline registration.

``slimtvm_passes()`` is the graph-level part (Relax → Relax). ``relax_pipeline()`` adds TVM's
lowering and returns one ``tvm.transform.Pass`` usable as ``tvm.compile(mod, target,
relax_pipeline=...)``. Importing this module registers it as the named pipeline ``"slimtvm"``,
so plain TVM users can write ``tvm.compile(mod, target, relax_pipeline="slimtvm")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from ..passes.fold_batchnorm import FoldBatchNorm

PIPELINE_NAME = "slimtvm"


@dataclass
class GraphPasses:
    """slimtvm's graph passes, in order, as instances so their reports can be read afterwards."""

    fold_batchnorm: FoldBatchNorm

    def sequence(self) -> list:
        return [
            relax.transform.FoldConstant(),  # weights computed in the graph become constants
            self.fold_batchnorm,
            relax.transform.FoldConstant(),
        ]

    def reports(self) -> dict:
        """Statistics of each slimtvm pass after a run, keyed by pass name (for the manifest)."""
        return {"fold_batchnorm": self.fold_batchnorm.report.to_json()}


def graph_passes() -> GraphPasses:
    """Fresh instances of slimtvm's graph passes."""
    return GraphPasses(fold_batchnorm=FoldBatchNorm())


def lowering_passes(target) -> list:
    """TVM's CPU lowering after slimtvm's graph passes: legalize, fuse, plan memory, VM code."""
    return [relax.backend.cpu_generic.get_default_pipeline(target)]


def relax_pipeline(target=None, passes: GraphPasses | None = None) -> tvm.transform.Pass:
    """slimtvm's graph passes followed by TVM's default lowering, as one pass."""
    passes = passes or graph_passes()

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.Pipeline")
    def _pipeline(mod, _ctx):
        chosen = target or tvm.target.Target.current()
        if chosen is None:
            raise ValueError("the slimtvm pipeline needs a target: pass one or call it inside `with target:`")
        seq = passes.sequence() + lowering_passes(chosen)
        return tvm.transform.Sequential(seq)(mod)

    return _pipeline


def _register() -> None:
    registry = relax.pipeline.PIPELINE_MAP if hasattr(relax.pipeline, "PIPELINE_MAP") else None
    if registry is not None and PIPELINE_NAME in registry:
        return
    relax.pipeline.register_pipeline(PIPELINE_NAME)(lambda target=None: relax_pipeline(target))


_register()
