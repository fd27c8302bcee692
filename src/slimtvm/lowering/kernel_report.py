"""Which kernels of a build run a slimtvm schedule and which fall back to the generic one.

Recorded right before scheduling: every PrimFunc of the module is matched against the kernel
families of :mod:`slimtvm.schedules.registry`; the rest get the generic CPU schedule (element-wise
ops, pooling, layout transforms — and any convolution or matmul no family covers, which
``compile`` names as a fallback).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import tvm
from tvm import s_tir

from ..schedules.registry import family_of

CONTRACTION_WORDS = ("conv", "matmul", "dense")  # a generic kernel with these in its name is a slow fallback


@dataclass
class KernelReport:
    """``families``: kernel count per slimtvm family; ``generic``: names of the kernels on the
    generic schedule."""

    families: Counter = field(default_factory=Counter)
    generic: list = field(default_factory=list)

    @property
    def fallbacks(self) -> list:
        """Generic kernels that hold a convolution or matmul: layers that lost slimtvm's kernels."""
        return [name for name in self.generic if any(word in name for word in CONTRACTION_WORDS)]

    def summary(self) -> str:
        """``kernels: N slimtvm (family n, …), M generic; fallbacks …`` in one line."""
        families = ", ".join(f"{name} {count}" for name, count in sorted(self.families.items()))
        line = f"kernels: {sum(self.families.values())} slimtvm ({families or 'none'}), {len(self.generic)} generic"
        fallbacks = self.fallbacks
        if fallbacks:
            line += f"; convolutions/matmuls on the generic schedule: {len(fallbacks)} ({', '.join(fallbacks)})"
        return line

    def to_json(self) -> dict:
        return {
            "slimtvm": sum(self.families.values()),
            "by_family": dict(sorted(self.families.items())),
            "generic": len(self.generic),
            "generic_fallbacks": self.fallbacks,
        }


@tvm.transform.module_pass(opt_level=0, name="slimtvm.RecordKernels")
class RecordKernels:
    """Analysis pass (module unchanged): fills ``report`` with the family of every PrimFunc."""

    def __init__(self):
        self.report = KernelReport()

    def transform_module(self, mod, _ctx):
        self.report = KernelReport()
        for gvar, func in sorted(mod.functions.items(), key=lambda item: item[0].name_hint):
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            family = family_of(s_tir.Schedule(func))
            if family is None:
                self.report.generic.append(gvar.name_hint)
            else:
                self.report.families[family.name] += 1
        return mod
