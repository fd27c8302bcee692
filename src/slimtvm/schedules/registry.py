"""The one list of slimtvm's kernel families.

A family is a compute with a named main block, its default (untuned) schedule rule, its
MetaSchedule design spaces, and the graph operation the lowering turns into it. Everything that
needs "all of slimtvm's kernels" derives from :data:`FAMILIES`: the default rules in dlight's
order, the tuning tasks and their design spaces, the kernel report of every build and the text
of errors. Adding a family is one schedules file (compute, rule, design spaces) plus one entry
here and one lowering entry (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tvm import s_tir

from .banded_conv import BandedConv, banded_design_spaces
from .bilinear_resize import BilinearResize
from .binary_conv_schedule import BinaryConv, binary_conv_design_spaces
from .conv2d_nchwc import Conv2dNCHWc, conv2d_design_spaces
from .cpu_rule import CPURule
from .dense import Dense, dense_design_spaces
from .depthwise_nchwc import DepthwiseNCHWc, depthwise_design_spaces
from .depthwise_projection import DepthwiseProjection, depthwise_projection_design_spaces
from .generic_cpu import GenericCPU
from .row_reductions import RowReductions
from .sparse_conv import SparseConv
from .split_reduction_conv import SplitReductionConv
from .winograd_conv import WinogradConv, winograd_design_spaces


@dataclass(frozen=True)
class KernelFamily:
    """One kernel family: ``rule`` (a :class:`CPURule` subclass: main block and default
    schedule), ``design_spaces(sch, lanes)`` (traced copies of ``sch`` for MetaSchedule; None for
    a family MetaSchedule cannot tune — ``slimtvm tune`` leaves its kernels out), and
    ``lowers_from`` (what in the graph becomes this kernel, for people)."""

    name: str
    rule: type[CPURule]
    design_spaces: Callable[[s_tir.Schedule, int], list] | None
    lowers_from: str

    @property
    def tunable(self) -> bool:
        return self.design_spaces is not None

    def matches(self, sch: s_tir.Schedule) -> bool:
        """Whether the PrimFunc in ``sch`` is a kernel of this family."""
        return self.rule(0).find_main_block(sch) is not None


FAMILIES: tuple[KernelFamily, ...] = (
    KernelFamily("binary_conv2d", BinaryConv, binary_conv_design_spaces, "Sign-fed conv2d with ±α weights, groups = 1"),
    KernelFamily("conv2d", Conv2dNCHWc, conv2d_design_spaces, "conv2d in NCHW[x]c (or plain input → NCHW[x]c), groups = 1"),
    KernelFamily(
        "split_reduction_conv2d",
        SplitReductionConv,
        None,
        "1×1 conv2d in NCHW[x]c on images of at most 7×7 whose input channels outweigh what crosses between cores when split in two",
    ),
    KernelFamily("depthwise", DepthwiseNCHWc, depthwise_design_spaces, "depthwise conv2d in NCHW[x]c"),
    KernelFamily(
        "depthwise_projection",
        DepthwiseProjection,
        depthwise_projection_design_spaces,
        "depthwise conv2d, element-wise steps and the 1×1 conv2d that alone reads them, in NCHW[x]c, on images of 28×28 or more",
    ),
    KernelFamily(
        "winograd_conv2d",
        WinogradConv,
        winograd_design_spaces,
        "3×3 stride-1 conv2d in NCHW16c / NCHW8c (AVX-512, AVX2), and stride-2 stems on ≤ 4 channels; groups = 1",
    ),
    KernelFamily("dense", Dense, dense_design_spaces, "2-D matmul (Gemm, MatMul)"),
    # not tunable: its loops run over data-dependent trip counts, which MetaSchedule cannot
    # reshape, and MetaSchedule's random inputs would be out-of-range offsets
    KernelFamily("sparse_conv2d", SparseConv, None, "conv2d with mostly zero constant weights, groups = 1"),
    KernelFamily(
        "banded_conv2d",
        BandedConv,
        banded_design_spaces,
        "conv2d in NCHW[x]c with zero weights outside a band of input channels (grouped convs: block-diagonal weights)",
    ),
)


def family_of(sch: s_tir.Schedule) -> KernelFamily | None:
    """The family of the PrimFunc in ``sch`` (the first that matches), or None."""
    return next((family for family in FAMILIES if family.matches(sch)), None)


def design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """The design spaces of the PrimFunc in ``sch`` for ``lanes``-wide SIMD; [] for no family."""
    family = family_of(sch)
    return family.design_spaces(sch, lanes) if family is not None and family.tunable else []


def default_rules(lanes: int) -> list:
    """Every family's default rule in :data:`FAMILIES` order, then the row kernels' rule (softmax
    and norms over the last axis) and the bilinear resize's, then the generic fallback."""
    return [family.rule(lanes) for family in FAMILIES] + [RowReductions(lanes), BilinearResize(lanes), GenericCPU(lanes)]


def describe_families(tunable_only: bool = False) -> str:
    """``name (lowers from …)`` for every family (or every tunable one), for messages that list
    what slimtvm covers."""
    return "; ".join(f"{family.name} ({family.lowers_from})" for family in FAMILIES if family.tunable or not tunable_only)
