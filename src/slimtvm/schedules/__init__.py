"""Kernel compute definitions and schedule templates, one file per kernel family.

Empty for now: fp32 schedules arrive with the fp32-kernel issue, bitserial with the binary one.
Until then TVM's generic lowering produces every kernel.
"""
