"""Kernel computes and schedule templates, one file per kernel family (see DESIGN.md).

- conv2d_nchwc: fp32 conv2d in the blocked NCHW[x]c layout (legalization + register-tiled schedule)
- depthwise_nchwc: fp32 depthwise conv2d in NCHW[x]c (compute + register-tiled schedule)
- dense: fp32 2-D matmul (streaming matrix-vector schedule)
- generic_cpu: the fallback rule for every other kernel (inline, parallelize, vectorize)
- rules: the default rules in dlight's order
- templates: the same schedules as MetaSchedule design spaces (sampled tiles)

The pipeline (compiler/pipeline.py) decides the layouts and applies these rules; schedules never
import passes.
"""
