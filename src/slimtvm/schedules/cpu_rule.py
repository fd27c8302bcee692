"""The shape every slimtvm CPU schedule rule shares: knows the SIMD width, finds its main block,
schedules a PrimFunc."""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

from .stages import find_block


class CPURule(ScheduleRule):
    """A dlight rule for CPUs with ``lanes`` fp32 SIMD lanes.

    A kernel family's rule names its compute's ``main_block`` and implements
    :meth:`schedule_block`; it applies to a PrimFunc that has that block and passes
    :meth:`accepts`. The generic fallback overrides :meth:`schedule` instead.
    """

    main_block: str = ""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def apply(self, func, target, tunable):
        if not isinstance(func, tvm.tirx.PrimFunc):
            return None
        return self.schedule(s_tir.Schedule(func))

    def schedule(self, sch: s_tir.Schedule):
        """Schedule ``sch`` in place and return it, or return None when the rule does not apply."""
        block = self.find_main_block(sch)
        return None if block is None else self.schedule_block(sch, block)

    def find_main_block(self, sch: s_tir.Schedule):
        """The main block this rule schedules, or None when the PrimFunc is not of its family."""
        block = find_block(sch, self.main_block) if self.main_block else None
        return block if block is not None and self.accepts(sch, block) else None

    def accepts(self, sch: s_tir.Schedule, block) -> bool:
        """Whether a PrimFunc with the main block ``block`` is one this rule can schedule."""
        return True

    def schedule_block(self, sch: s_tir.Schedule, block):
        """Schedule the PrimFunc around its main ``block``; return ``sch``."""
        raise NotImplementedError
