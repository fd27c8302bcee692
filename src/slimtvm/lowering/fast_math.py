"""Sigmoid and softmax on float32 with a vectorizable exponential, erf and tanh by rational polynomials; powers by quarter exponents with square roots.

TVM's default legalization computes them with ``exp``, which LLVM turns into one scalar call to
libm's ``expf`` per element: in a SiLU network (YOLO's ``x · sigmoid(x)`` after every conv) the
calls cost more than the convolutions they follow (YOLOv8n at 320: 2,265 call sites, the 3→16
stem conv 1.9 ms of which the conv is a tenth). TOPI's ``fast_exp`` (range reduction to
``2^n · e^r`` and a degree-6 polynomial, ~1 ulp-scale relative error over float32's range)
vectorizes and fuses into the conv epilogues; :func:`fast_exp_expr` writes the same
computation as one expression. onnxruntime's CPU kernels approximate these
functions the same way (MLAS's polynomial logistic and exponential).

``power(x, p)`` with a constant ``p`` that is a multiple of ¼ (LRN's ``β = 0.75``: GoogLeNet /
Inception v1 and AlexNet-era models) likewise became a scalar ``powf`` call per element: Inception
v1's two LRNs spent 2.5 ms of its 12.8 ms there (1 thread, Zen 5). ``x^(a + b/2 + c/4)`` is
``x^a · √x^b · √√x^c``: square roots are vector instructions and correctly rounded, so the result
is within a few ulp of ``powf``'s, with the same NaN for a negative base and a fractional exponent.

Other dtypes and other exponents keep TVM's legalization.
"""

from __future__ import annotations

import math

import tvm
from tvm import te, topi

from ..passes.constants import constant_value


def default_legalization(op_name: str, bb, call):
    """TVM's own legalization of ``op_name`` (for a rule here that refuses a call)."""
    return tvm.ir.Op.get(op_name).get_attr("FLegalize")(bb, call)


# Cephes' expf: e^x = 2^n · e^r, n = round(x / ln 2), |r| ≤ ln 2 / 2, e^r by a degree-6 polynomial
# (the coefficients of TOPI's fast_exp)
EXP_LIMIT = 88.3762626647949  # e^±limit is float32's largest / smallest normal range
LOG2E = 1.44269504088896341
LN2 = 0.6931471805599453
EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def fast_exp_expr(value):
    """``e^value`` for a float32 PrimExpr, as TOPI's ``fast_exp`` computes it, but with ``value``
    evaluated once (a ``Let``): TOPI's version repeats its input ten times, and when that input
    is an inlined gather (a concat of reshapes, YOLO's head) the gather runs ten times too."""
    tirx = tvm.tirx
    f32 = lambda number: tirx.const(number, "float32")  # noqa: E731
    x = tirx.Var("exp_x", "float32")
    n = tirx.Var("exp_n", "float32")
    r = tirx.Var("exp_r", "float32")
    polynomial = f32(EXP_POLYNOMIAL[0])
    for coefficient in EXP_POLYNOMIAL[1:]:
        polynomial = polynomial * r + f32(coefficient)
    polynomial = polynomial * r * r + r + f32(1.0)
    two_to_n = tirx.reinterpret("float32", tirx.shift_left(tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32")))
    body = tirx.max(two_to_n * polynomial, x)  # as TOPI: never below x's own value (keeps huge inputs monotone)
    body = tirx.Let(r, x - n * f32(LN2), body)
    body = tirx.Let(n, tirx.floor(x * f32(LOG2E) + f32(0.5)), body)
    return tirx.Let(x, _clamped(value, EXP_LIMIT), body)


def _clamped(value, limit: float):
    """``value`` clamped to ``[−limit, limit]`` by comparisons that a NaN fails, so that it passes
    through (and through the polynomial after it) as onnxruntime's and libm's functions pass it:
    TVM's ``min``/``max`` returned the bound (sigmoid(NaN) came out 4e-39, erf(NaN) 1). Costs what
    min/max cost; a NaN test and select after the polynomial cost EfficientNet-B0 4% (1 thread)."""
    tirx = tvm.tirx
    v = tirx.Var("clamp_in", "float32")
    high, low = tirx.const(limit, "float32"), tirx.const(-limit, "float32")
    return tirx.Let(v, value, tirx.Select(v > high, high, tirx.Select(v < low, low, v)))


def fast_sigmoid(x: te.Tensor) -> te.Tensor:
    """``1 / (1 + e^-x)`` with :func:`fast_exp_expr` (its input clamped to float32's range, so
    the result saturates to 0 and 1 instead of producing inf or NaN), one stage."""
    one = tvm.tirx.const(1.0, x.dtype)
    return te.compute(x.shape, lambda *i: one / (one + fast_exp_expr(-x(*i))), name="T_sigmoid", tag="elemwise")


def legalize_sigmoid(bb, call):
    """``relax.sigmoid`` on float32 → :func:`fast_sigmoid`; other dtypes → TVM's default."""
    if str(call.args[0].ty.dtype) != "float32":
        return default_legalization("relax.sigmoid", bb, call)
    return bb.call_te(fast_sigmoid, call.args[0], primfunc_name_hint="sigmoid")


# TOPI's fast_erf (Eigen's): erf(x) = x · P(x²) / Q(x²) on x clamped to [−4, 4] (erf is ±1 in float32
# beyond), P of degree 6 and Q of degree 4 in x²; within 4e-7 of erf over float32's range.
ERF_LIMIT = 4.0
ERF_NUMERATOR = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02)


def odd_rational_expr(value, name: str, limit: float, numerator_coefficients, denominator_coefficients):
    """``x · P(x²) / Q(x²)`` for a float32 PrimExpr ``value`` clamped to ``[−limit, limit]`` (a NaN
    passes through), the coefficients highest degree first, ``value`` evaluated once (a ``Let``,
    as :func:`fast_exp_expr`): the form of TOPI's (Eigen's) fast erf and tanh."""
    tirx = tvm.tirx
    f32 = lambda number: tirx.const(number, "float32")  # noqa: E731
    x = tirx.Var(f"{name}_x", "float32")
    square = tirx.Var(f"{name}_x2", "float32")
    numerator = f32(numerator_coefficients[0])
    for coefficient in numerator_coefficients[1:]:
        numerator = numerator * square + f32(coefficient)
    denominator = f32(denominator_coefficients[0])
    for coefficient in denominator_coefficients[1:]:
        denominator = denominator * square + f32(coefficient)
    body = tirx.Let(square, x * x, x * numerator / denominator)
    return tirx.Let(x, _clamped(value, limit), body)


def fast_erf_expr(value):
    """``erf(value)`` for a float32 PrimExpr as TOPI's ``fast_erf`` computes it."""
    return odd_rational_expr(value, "erf", ERF_LIMIT, ERF_NUMERATOR, ERF_DENOMINATOR)


def fast_erf(x: te.Tensor) -> te.Tensor:
    """:func:`fast_erf_expr` of every element, one stage (a GELU's ``erf(x / √2)`` in a conv epilogue)."""
    return te.compute(x.shape, lambda *i: fast_erf_expr(x(*i)), name="T_erf", tag="elemwise")


def legalize_erf(bb, call):
    """``relax.erf`` on float32 → :func:`fast_erf` (TVM's default is a scalar ``erff`` call per
    element: ConvNeXt-Tiny's GELUs took 63 of its 104 ms, 1 thread, Zen 5); other dtypes → TVM's."""
    if str(call.args[0].ty.dtype) != "float32":
        return default_legalization("relax.erf", bb, call)
    return bb.call_te(fast_erf, call.args[0], primfunc_name_hint="erf")


# TOPI's fast_tanh (Eigen's): tanh(x) = x · P(x²) / Q(x²) on x clamped to [−9, 9] (tanh is ±1 in
# float32 beyond), P of degree 6 and Q of degree 3 in x²; within a few ulp of tanh.
TANH_LIMIT = 9.0
TANH_NUMERATOR = (
    -2.76076847742355e-16,
    2.00018790482477e-13,
    -8.60467152213735e-11,
    5.12229709037114e-08,
    1.48572235717979e-05,
    6.37261928875436e-04,
    4.89352455891786e-03,
)
TANH_DENOMINATOR = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def fast_tanh_expr(value):
    """``tanh(value)`` for a float32 PrimExpr as TOPI's ``fast_tanh`` computes it."""
    return odd_rational_expr(value, "tanh", TANH_LIMIT, TANH_NUMERATOR, TANH_DENOMINATOR)


def fast_tanh(x: te.Tensor) -> te.Tensor:
    """:func:`fast_tanh_expr` of every element, one stage (GPT-2's ``gelu_new`` in a matmul epilogue)."""
    return te.compute(x.shape, lambda *i: fast_tanh_expr(x(*i)), name="T_tanh", tag="elemwise")


def legalize_tanh(bb, call):
    """``relax.tanh`` on float32 → :func:`fast_tanh` (TVM's default computes it from scalar
    ``expf`` calls: GPT-2's tanh GELU took a quarter of its time, 71 µs of 280); other dtypes →
    TVM's."""
    if str(call.args[0].ty.dtype) != "float32":
        return default_legalization("relax.tanh", bb, call)
    return bb.call_te(fast_tanh, call.args[0], primfunc_name_hint="tanh")


def legalize_softmax_with_fast_exp(bb, call):
    """``relax.nn.softmax`` on float32 → TOPI's ``fast_softmax``; other dtypes → TVM's default."""
    if str(call.args[0].ty.dtype) != "float32":
        return default_legalization("relax.nn.softmax", bb, call)
    return bb.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis), primfunc_name_hint="softmax")


MAX_QUARTER_POWER = 16  # |p| ≤ 4: at most 4 multiplies and two roots; larger p keep powf


def quarter_power_steps(exponent: float) -> tuple | None:
    """``(a, b, c, negative)`` with ``|exponent| = a + b/2 + c/4`` (b, c ∈ {0, 1}), or None when
    the exponent is no multiple of ¼ (or not finite), is 0, or exceeds :data:`MAX_QUARTER_POWER`
    quarters."""
    quarters = exponent * 4
    if not math.isfinite(quarters) or quarters != int(quarters) or quarters == 0 or abs(quarters) > MAX_QUARTER_POWER:
        return None
    whole = abs(int(quarters))
    return whole // 4, (whole % 4) // 2, whole % 2, quarters < 0


def quarter_power(x: te.Tensor, exponent: float) -> te.Tensor:
    """``x ** exponent`` for a multiple of ¼ (:func:`quarter_power_steps`) by multiplies and
    square roots, one stage. A negative exponent multiplies ``1/x`` for its whole part and divides
    by the roots' product (``1/(x·x)`` would overflow where ``x⁻²`` does not)."""
    a, b, c, negative = quarter_power_steps(exponent)
    tirx = tvm.tirx
    one = tirx.const(1.0, x.dtype)

    def product(factors):
        result = factors[0]
        for factor in factors[1:]:
            result = result * factor
        return result

    def value(*index):
        base = tirx.Var("power_x", x.dtype)
        root = tirx.Var("power_root", x.dtype)
        roots = [root] * b + [tirx.sqrt(root)] * c
        if not negative:
            result = product([base] * a + roots)
        elif roots:
            result = product([one / base] * a + [one / product(roots)])
        else:
            result = product([one / base] * a)
        return tirx.Let(base, x(*index), tirx.Let(root, tirx.sqrt(base), result))

    return te.compute(x.shape, value, name="T_power", tag="elemwise")


def legalize_power(bb, call):
    """``relax.power`` of a float32 tensor by a scalar constant multiple of ¼ → :func:`quarter_power`;
    anything else → TVM's default."""
    base, exponent = call.args
    value = constant_value(exponent)
    if str(base.ty.dtype) != "float32" or value is None or value.size != 1 or quarter_power_steps(float(value.reshape(()))) is None:
        return default_legalization("relax.power", bb, call)
    return bb.call_te(quarter_power, base, float(value.reshape(())), primfunc_name_hint="power")
