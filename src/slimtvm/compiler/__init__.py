"""The compiler driver: the pipeline's order (graph passes → lowering → schedules → TVM), the
build of the artifact and its manifest, and ``inspect``'s per-layer table.

Needs the full apache-tvm wheel. What runs on a board lives in :mod:`slimtvm.runtime`.
"""
