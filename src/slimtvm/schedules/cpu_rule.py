"""The shape every slimtvm CPU schedule rule shares: knows the SIMD width, schedules a PrimFunc."""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule


class CPURule(ScheduleRule):
    """A dlight rule for CPUs with ``lanes`` fp32 SIMD lanes; subclasses implement :meth:`schedule`."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def apply(self, func, target, tunable):
        if not isinstance(func, tvm.tirx.PrimFunc):
            return None
        return self.schedule(s_tir.Schedule(func))

    def schedule(self, sch: s_tir.Schedule):
        """Schedule ``sch`` in place and return it, or return None when the rule does not apply."""
        raise NotImplementedError
