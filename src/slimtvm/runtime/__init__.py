"""Load, run and benchmark a slimtvm artifact with TVM's runtime alone (works on a board).

Imports only the standard library, numpy, ``tvm.runtime`` and the manifest: never TVM's compiler
(``libtvm_compiler.so``), onnx, or the rest of slimtvm. An import-linter contract and a test that
runs without the compiler library hold this.
"""
