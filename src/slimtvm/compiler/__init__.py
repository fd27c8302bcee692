"""The compiler driver: frontend, pipeline, build, runtime, bench, inspection.

Only :mod:`slimtvm.compiler.runtime` and :mod:`slimtvm.compiler.manifest` may be imported on a
device that has TVM's runtime alone; every other module here needs the full apache-tvm wheel.
"""
