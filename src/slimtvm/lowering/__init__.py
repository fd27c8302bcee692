"""Recognised layers → kernel calls, and the layouts between them.

The graph passes (:mod:`slimtvm.passes`) recognise and record; this package turns what they
recognised into calls of the kernels in :mod:`slimtvm.schedules`: convolution layouts
(ConvertLayout wishes, legalization to slimtvm's computes), binary layers (packed weights,
thresholds fused between binary layers), and the per-layer records ``inspect`` and the manifest
read.
"""
