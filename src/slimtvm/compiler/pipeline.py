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

from ..passes.binarize import DetectBinaryLayers, LowerBinaryLayers
from ..passes.canonical_sign import CanonicalizeSign
from ..passes.fold_batchnorm import FoldBatchNorm
from ..passes.remove_dropout import RemoveDropout
from ..passes.scalar_min_max import ScalarMinMaxAsOps

PIPELINE_NAME = "slimtvm"


@dataclass
class GraphPasses:
    """slimtvm's graph passes, in order, as instances so their reports can be read afterwards."""

    fold_batchnorm: FoldBatchNorm
    binarize: DetectBinaryLayers
    lower_binary: LowerBinaryLayers  # runs in the lowering (after ConvertLayout); its report is here too

    def sequence(self) -> list:
        return [
            relax.transform.FoldConstant(),  # weights computed in the graph become constants
            RemoveDropout(),
            ScalarMinMaxAsOps(),  # Clip kernels back to ops, so that layouts pass through them
            CanonicalizeSign(),  # where(x ≥ 0, 1, −1) → sign(sign(x) + 0.5): layouts pass through it
            self.fold_batchnorm,
            relax.transform.FoldConstant(),
            self.binarize,  # after folding: in-graph weight binarization is constant by now
        ]

    def reports(self) -> dict:
        """Statistics of each slimtvm pass after a run, keyed by pass name (for the manifest)."""
        return {
            "fold_batchnorm": self.fold_batchnorm.report.to_json(),
            "binarize": self.binarize.report.to_json(),
            "binary_blocks": self.lower_binary.blocks_report(),
        }


def graph_passes() -> GraphPasses:
    """Fresh instances of slimtvm's graph passes."""
    return GraphPasses(fold_batchnorm=FoldBatchNorm(), binarize=DetectBinaryLayers(), lower_binary=LowerBinaryLayers())


def lowering_passes(target, database=None, lower_binary: LowerBinaryLayers | None = None) -> list:
    """From the optimised Relax graph to VM code, with slimtvm's kernels and layouts.

    Convolutions move to the blocked NCHW[x]c layout (x = the target's fp32 SIMD lanes, at least 8;
    layout transforms only where the graph leaves that layout), are legalized to slimtvm's
    computes, fused with their element-wise neighbours, and scheduled: by the best record of a
    MetaSchedule ``database`` (a ``TuningDatabase``) where it has one, else by slimtvm's default
    rules. Then TVM's CPU lowering plans memory and emits VM code.
    """
    return kernel_passes(target, lower_binary) + scheduling_passes(target, database)


def kernel_passes(target, lower_binary: LowerBinaryLayers | None = None) -> list:
    """Layouts, legalization and fusion: the module whose PrimFuncs are the tuning tasks.
    ``lower_binary``: the binary-layer lowering instance, to read its report afterwards."""
    from ..schedules.conv2d_nchwc import blocked_layouts_for, legalize_conv2d
    from ..targets.presets import popcount_by_table, simd_lanes

    block = max(simd_lanes(target), 8)  # 16-channel blocks on AVX2 measured 1.83x ORT on ResNet-50 against 1.56x
    lower_binary = lower_binary or LowerBinaryLayers()
    lower_binary.use_popcount_tables(popcount_by_table(target))
    return [
        _convert_layout_or_keep(lambda call: blocked_layouts_for(call, block)),
        relax.transform.Normalize(),
        relax.transform.FoldConstant(),  # weights are transformed to the blocked layout once, here
        lower_binary,  # binary kernels in the layouts just chosen, thresholds fused
        relax.transform.LegalizeOps({"relax.nn.conv2d": legalize_conv2d}),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def scheduling_passes(target, database=None) -> list:
    """Tuned schedules from ``database`` (if given), default rules for the rest, then VM lowering."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.s_tir import dlight

    from ..schedules.rules import default_rules
    from ..targets.presets import simd_lanes

    tuned = [_apply_database(database)] if database is not None else []
    return [
        *tuned,
        dlight.ApplyDefaultSchedule(*default_rules(simd_lanes(target))),  # skips functions already scheduled
        *cpu_generic.dataflow_lower_passes(target),
        *cpu_generic.finalize_passes(target),
    ]


def _apply_database(database) -> tvm.transform.Pass:
    """MetaSchedule's ApplyDatabase with ``database`` (a TuningDatabase) as the current database.

    Counts the kernels it scheduled into ``database.applied`` (kernel names) for the manifest.
    """

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.ApplyTuningDatabase")
    def _apply(mod, _ctx):
        with database.database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        database.applied = sorted(
            gvar.name_hint for gvar, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and "tirx.is_scheduled" in func.attrs
        )
        return mod

    return _apply


def _convert_layout_or_keep(layouts_for_call) -> tvm.transform.Pass:
    """Relax's ConvertLayout, or — if it fails inside TVM on some graph — the module unchanged.

    ``layouts_for_call(call)`` gives the desired layouts of each conv2d call (op name → layouts).

    ConvertLayout is an optimisation: without it every kernel stays in NCHW and takes the generic
    schedules, slower but exact. A warning names TVM's complaint.
    """

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.ConvertLayoutOrKeep")
    def _convert(mod, _ctx):
        try:
            return relax.transform.ConvertLayout({}, layouts_for_call)(mod)
        except Exception as err:  # noqa: BLE001 - TVM InternalError; fall back to plain layouts
            import warnings

            from ..errors import first_line

            warnings.warn(f"blocked layouts not applied (TVM ConvertLayout failed: {first_line(err)}); kernels stay in NCHW", stacklevel=2)
            return mod

    return _convert


def relax_pipeline(target=None, passes: GraphPasses | None = None) -> tvm.transform.Pass:
    """slimtvm's graph passes followed by TVM's default lowering, as one pass."""
    passes = passes or graph_passes()

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.Pipeline")
    def _pipeline(mod, _ctx):
        chosen = target or tvm.target.Target.current()
        if chosen is None:
            raise ValueError("the slimtvm pipeline needs a target: pass one or call it inside `with target:`")
        seq = passes.sequence() + lowering_passes(chosen, lower_binary=passes.lower_binary)
        return tvm.transform.Sequential(seq)(mod)

    return _pipeline


def _register() -> None:
    registry = relax.pipeline.PIPELINE_MAP if hasattr(relax.pipeline, "PIPELINE_MAP") else None
    if registry is not None and PIPELINE_NAME in registry:
        return
    relax.pipeline.register_pipeline(PIPELINE_NAME)(lambda target=None: relax_pipeline(target))


_register()
