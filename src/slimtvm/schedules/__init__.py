"""Kernel computes, schedules and weight layouts, one file per kernel family.

- registry: the one list of families (compute's main block, default rule, design spaces)
- conv2d_nchwc: fp32 conv2d in the blocked NCHW[x]c layout
- depthwise_nchwc: fp32 depthwise conv2d in NCHW[x]c
- dense: fp32 2-D matmul (streaming matrix-vector schedule)
- binary_conv_compute / binary_conv_schedule / binary_weights: the packed binary conv
- binary_grouped_conv_and_dense: binary grouped convs and dense layers (32-bit words)
- generic_cpu: the fallback rule for every other kernel (inline, parallelize, vectorize)
- stages, cpu_rule, transpose_intrin: what the schedules share

Schedules never import passes or the lowering; :mod:`slimtvm.lowering` calls these computes.
"""
