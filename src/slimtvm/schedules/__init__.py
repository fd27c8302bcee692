"""Kernel computes and schedule templates, one file per kernel family (see DESIGN.md).

- conv2d_nchwc: fp32 conv2d in the blocked NCHW[x]c layout (legalization + register-tiled schedule)
- generic_cpu: the fallback rule for every other kernel (inline, parallelize, vectorize)

The pipeline (compiler/pipeline.py) decides the layouts and applies these rules; schedules never
import passes.
"""
