"""Static shapes of Relax tensor expressions."""

from __future__ import annotations

from tvm import relax


def static_shape(expr, dtype: str | None = None) -> list[int] | None:
    """The shape of a tensor-typed expression as ints; None for anything else: not a tensor, a
    symbolic or unknown shape, or (with ``dtype``) another element type."""
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    if dtype is not None and str(ty.dtype) != dtype:
        return None
    shape = ty.shape
    try:
        return [int(dim) for dim in (shape.values if hasattr(shape, "values") else shape)]
    except (TypeError, ValueError, AttributeError):
        return None
