"""The lowering's passes, in order: layouts, binary kernels, legalization and fusion, then
schedules (tuned records first, slimtvm's default rules, TVM's CPU lowering)."""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

from ..passes.fold_constants import FoldConstantsSafely
from ..schedules.registry import default_rules
from ..targets.kernel_target import KernelTarget
from .banded_layers import BandedLayers
from .banded_trip_counts import set_banded_trip_counts
from .binary_layers import LowerBinaryLayers
from .blocked_resize_concat import blocked_resize_concat
from .channel_norms import BlockedChannelNorms, HideChannelNorms
from .channel_permutations import BlockedChannelPermutations
from .channel_windows import ChannelWindowSums
from .conv_layouts import blocked_layouts_for, convert_layout_or_keep
from .depthwise_projections import DepthwiseProjections
from .keep_one_kernel import keep_one_kernel
from .kernel_report import RecordKernels
from .legalizations import LEGALIZATIONS
from .let_free_kernels import let_free_kernels
from .matmul_columns import PadMatmulColumns
from .packed_matmuls import PackedMatmuls
from .pad_channels import pad_channels_to_block
from .pool_before_relayout import pool_before_relayout
from .scope_pragmas import drop_scope_pragmas
from .sink_relayouts import sink_relayouts
from .sparse_layers import SparseLayers
from .split_grouped_convs import SplitGroupedConvs
from .storage_by_shape import StorageByShape
from .transposed_convs import TransposedConvs
from .weight_prefetch import insert_weight_prefetch
from .winograd_layers import WinogradLayers


@dataclass
class LoweringPasses:
    """The lowering of one compile for ``target`` (a :class:`KernelTarget`); :meth:`reports`
    and ``lower_binary.records`` read it after a run."""

    target: KernelTarget
    lower_binary: LowerBinaryLayers = None
    sparse: SparseLayers = None
    winograd: WinogradLayers = None
    banded: BandedLayers = None
    kernels: RecordKernels = field(default_factory=RecordKernels)
    split_grouped: SplitGroupedConvs = None
    channel_windows: ChannelWindowSums = None
    hide_channel_norms: HideChannelNorms = field(default_factory=HideChannelNorms)
    transposed_convs: TransposedConvs = field(default_factory=TransposedConvs)
    matmul_columns: PadMatmulColumns = None
    packed_matmuls: PackedMatmuls = None
    depthwise_projections: DepthwiseProjections = None
    storage_by_shape: StorageByShape = field(default_factory=StorageByShape)
    sparse_timer: object = None  # for the default SparseLayers: times convs near its thresholds
    conv_algorithm: str = "auto"  # for the default WinogradLayers: "direct" keeps it out

    def __post_init__(self):
        if self.winograd is None:
            self.winograd = WinogradLayers(self.target.lanes, enabled=self.conv_algorithm != "direct")
        if self.sparse is None:
            self.sparse = SparseLayers(self.target.lanes, winograd=self.winograd, timer=self.sparse_timer, half_width_vectors=self.target.half_width_vectors)
        if self.split_grouped is None:
            self.split_grouped = SplitGroupedConvs(self.target.lanes)
        if self.matmul_columns is None:
            self.matmul_columns = PadMatmulColumns(self.target.lanes)
        if self.channel_windows is None:
            self.channel_windows = ChannelWindowSums(self.target.lanes)
        if self.banded is None:
            self.banded = BandedLayers(self.target.lanes, lambda: self.split_grouped.block_diagonal_weights + self.channel_windows.weights)
        if self.packed_matmuls is None:
            self.packed_matmuls = PackedMatmuls(self.target.lanes)
        if self.depthwise_projections is None:
            self.depthwise_projections = DepthwiseProjections(self.target.channel_block)
        if self.lower_binary is None:
            self.lower_binary = LowerBinaryLayers(
                self.target.popcount_tables, self.sparse, self.winograd, self.banded, self.packed_matmuls, self.depthwise_projections
            )

    def to_kernels(self) -> list:
        """Layouts, binary lowering, legalization and fusion: the module whose PrimFuncs are the
        kernels (and the tuning tasks).

        Convolutions move to the blocked NCHW[x]c layout (x = the target's channel block; layout
        transforms only where the graph leaves that layout), binarized layers become binary
        kernels in those layouts, the rest are legalized to slimtvm's computes and fused with
        their element-wise neighbours."""
        return [
            self.transposed_convs,  # transposed convs (up-convs) as a conv and a depth-to-space
            self.split_grouped,  # grouped (not depthwise) convs as one ordinary conv per group, or block diagonal
            self.channel_windows,  # LRN's sums over neighbouring channels: 1×1 convs on banded weights
            pad_channels_to_block(self.target.channel_block),  # 16-channel blocks for models with 8·k-channel convs
            self.hide_channel_norms,  # layer norms over channels: kernels of their own, out of the conversion's way
            relax.transform.Normalize(),
            convert_layout_or_keep(self.target.channel_block, self._layouts_for),
            relax.transform.Normalize(),
            BlockedChannelNorms(self.hide_channel_norms),  # … and back in the blocked layout, without the relayouts
            blocked_resize_concat(),  # a detector's upsample + concat path stays blocked
            sink_relayouts(),  # element-wise ops between plain-layout (sparse) kernels stay plain
            pool_before_relayout(),  # a global mean after a padded conv averages the blocked image
            BlockedChannelPermutations(),  # a channel shuffle between blocked tensors: one kernel, not relayouts around it
            relax.transform.EliminateCommonSubexpr(),  # one relayout per weight where a batch runs per image (passes/split_batch.py)
            FoldConstantsSafely(),  # weights are transformed to the blocked layout once, here
            self.lower_binary,  # binary kernels in the layouts just chosen, thresholds fused; sparse kernels
            self.matmul_columns,  # an attention's q · kᵀ on whole vectors of keys
            relax.backend.DispatchSampling(),  # as TVM's CPU pipeline: sort, scan (cumsum) and sampling ops
            relax.backend.DispatchSortScan(),  # to their TOPI kernels before legalization
            relax.transform.LegalizeOps(dict(LEGALIZATIONS)),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            let_free_kernels,  # MetaSchedule's flop estimate refuses Let: family kernels without them
            keep_one_kernel,  # a model folded to constants still links for another architecture
            self.kernels,  # which kernels the families below cover, before anything is scheduled
        ]

    def _layouts_for(self, call, block: int) -> dict:
        """ConvertLayout's wishes: sparse convs keep NCHW, every other conv goes blocked (first of
        all those the banded kernel takes)."""
        if self.banded.takes_plain(call, block):
            return blocked_layouts_for(call, block)
        sparse = self.sparse.layouts_for(call)
        return {"relax.nn.conv2d": sparse} if sparse is not None else blocked_layouts_for(call, block)

    def to_code(self, tvm_target, database=None) -> list:
        """Tuned schedules from ``database`` (a TuningDatabase, if given), slimtvm's default rules
        for the rest, then TVM's CPU lowering to VM code."""
        from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
        from tvm.s_tir import dlight

        tuned = [apply_database(database)] if database is not None else []
        return [
            *tuned,
            dlight.ApplyDefaultSchedule(*default_rules(self.target.lanes)),  # skips functions already scheduled
            insert_weight_prefetch(),
            set_banded_trip_counts(),
            drop_scope_pragmas(),
            *cpu_generic.dataflow_lower_passes(tvm_target),
            *_after_memory_planning(cpu_generic.finalize_passes(tvm_target), self.storage_by_shape()),
        ]

    def reports(self) -> dict:
        return {
            "transposed_convs": {"rewritten": self.transposed_convs.count, "positions": list(self.transposed_convs.positions)},
            "matmul_columns": {"attentions": self.matmul_columns.attentions, "products": self.matmul_columns.products},
            "packed_matmuls": {"packed": self.packed_matmuls.count},
            "depthwise_projections": {"fused": self.depthwise_projections.count},
            "binary_blocks": self.lower_binary.blocks_report(),
            "sparse_layers": self.sparse.report.to_json(),
            "kernels": self.kernels.report.to_json(),
            "storage_by_shape": {"moved": sum(self.storage_by_shape.moved.values())},
        }


def _after_memory_planning(passes: list, extra: tvm.transform.Pass) -> list:
    """TVM's finalizing passes with ``extra`` right after its memory planner; refuses (raises) a
    TVM whose list has no ``StaticPlanBlockMemory``, which would leave ``extra`` out silently."""
    names = [p.info.name for p in passes]
    if "StaticPlanBlockMemory" not in names:
        raise RuntimeError(f"TVM's CPU finalizing passes have no StaticPlanBlockMemory: {names}")
    at = names.index("StaticPlanBlockMemory") + 1
    return [*passes[:at], extra, *passes[at:]]


def apply_database(database) -> tvm.transform.Pass:
    """MetaSchedule's ApplyDatabase with ``database`` (a TuningDatabase) as the current database.

    Counts the kernels it scheduled into ``database.applied`` (kernel names) for the manifest.
    """

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.ApplyTuningDatabase")
    def _apply(mod, _ctx):
        with database.database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        database.applied = sorted(
            gvar.name_hint
            for gvar, func in mod.functions.items()
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and "tirx.is_scheduled" in func.attrs
        )
        return mod

    return _apply
