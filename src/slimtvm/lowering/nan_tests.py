"""ONNX ``IsNaN`` (Relax ``isnan``) as a test on the value's bits, which vectorizes.

TVM's legalization computes ``tir.isnan``, which its loop vectorizer does not take: a kernel
with one is scalarized whole. torch's scaled dot-product attention exports
``Where(IsNaN(softmax), 0, softmax)`` after every softmax (fully masked rows give NaN), and that
made DeiT-Tiny's softmax kernels 4× slower (118 against 31 µs a call). ``x != x``, the usual
trick, is folded to false by TVM's simplifier. Here a value is NaN exactly when its bits without
the sign exceed those of +∞ (IEEE 754: all exponent bits set, mantissa not zero), an integer
compare of the reinterpreted bits, which vectorizes. Exact for float16, float32 and float64;
other types keep TVM's legalization.
"""

from __future__ import annotations

from tvm import te, tirx

from .fast_math import default_legalization

# float type: (integer type of its width, the bits without the sign, the bits of +∞)
NAN_BITS = {
    "float16": ("int16", 0x7FFF, 0x7C00),
    "float32": ("int32", 0x7FFFFFFF, 0x7F800000),
    "float64": ("int64", 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
}


def is_nan_by_bits(value):
    """A boolean TIR expression: ``value`` (a float16/32/64 expression) is NaN."""
    bits_type, magnitude, infinity = NAN_BITS[str(value.dtype)]
    bits = tirx.reinterpret(bits_type, value)
    return tirx.bitwise_and(bits, tirx.const(magnitude, bits_type)) > tirx.const(infinity, bits_type)


def legalize_isnan(bb, call):
    """``isnan`` by :func:`is_nan_by_bits` for float16/32/64 data, TVM's legalization otherwise."""
    data = call.args[0]
    if str(getattr(data.ty, "dtype", "")) not in NAN_BITS:
        return default_legalization("relax.isnan", bb, call)

    def nan_test(x):
        return te.compute(x.shape, lambda *index: is_nan_by_bits(x[index]), name="T_isnan")

    return bb.call_te(nan_test, data)
