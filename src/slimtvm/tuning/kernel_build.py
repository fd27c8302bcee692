"""Build and export one kernel in MetaSchedule's builder workers (``f_build`` / ``f_export``).

MetaSchedule's default build function imports ``tvm.s_tir.tensor_intrin``, which registers every
tensor intrinsic TVM has and takes 30–40 s per import on this machine; since the builder starts
fresh workers for every round, that alone timed out each round. slimtvm's kernels use no tensor
intrinsics, so this builder skips that import and otherwise does what TVM's does, plus the TIR
passes ``compile`` adds after scheduling: the weight prefetch (lowering/weight_prefetch.py) and
the banded conv's per-tile trip counts (lowering/banded_trip_counts.py). Without the prefetch a
tuned candidate was timed without the prefetch its schedule asks for, while the
model runs with it: ResNet-18's tuned 256-channel Winograd conv ran 2.6 ms in the model against
the default's 1.2 (Zen 4, 1 thread).
"""

from __future__ import annotations

import os
import tempfile


def build_kernel(mod, target, _params=None):
    """Compile a scheduled PrimFunc module for ``target`` (MetaSchedule's ``f_build`` contract),
    with the weight prefetch and the banded trip counts its schedule annotates, as ``compile``
    builds it (a banded candidate without them would be timed reducing over its widest band)."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.tirx import build  # what the deprecated tvm.driver.build calls

    from ..lowering.banded_trip_counts import set_banded_trip_counts
    from ..lowering.weight_prefetch import insert_weight_prefetch

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return build(set_banded_trip_counts()(insert_weight_prefetch()(mod)), target=target)


def export_kernel(cross_compiler: str | None, folder: str, mod) -> str:
    """Write a built kernel as a shared library (cross-linked when ``cross_compiler`` is given) in
    a new subfolder of ``folder``, the tuning run's scratch folder, which the run removes when it
    ends: TVM's own exporter writes each candidate to a fresh system temp folder and never removes
    it (a long tuning run left thousands behind)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="kernel-", dir=folder), "kernel.so")
    if cross_compiler:
        mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    else:
        mod.export_library(path)
    return path
