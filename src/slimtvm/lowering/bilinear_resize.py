"""``relax.image.resize2d`` in linear mode → the separable kernel of schedules/bilinear_resize.py.

Taken for float32 tensors of static shape in NCHW or NCHW[x]c, upsampling along the rows, with
a coordinate mode the kernel has (half_pixel, align_corners, asymmetric, pytorch_half_pixel;
none of them reads the ROI, which only ``tf_crop_and_resize`` does); anything else (nearest and cubic modes, downsampling, ``tf_crop_and_resize``) keeps TVM's
legalization.
"""

from __future__ import annotations

import re

import tvm

from ..passes.static_shapes import static_shape
from ..schedules.bilinear_resize import COORDINATE_MODES, separable_bilinear

BLOCKED_OR_PLAIN = re.compile(r"^NCHW(\d+c)?$")


def legalize_resize2d(bb, call):
    """Linear ``resize2d`` as the module docstring says → :func:`separable_bilinear`; anything
    else → TVM's default legalization."""
    attrs, data = call.attrs, call.args[0]
    layout = str(attrs.layout)
    shape = static_shape(data, "float32")
    size = _static_size(call.args[1])
    out_dtype = str(attrs.out_dtype)
    taken = (
        str(attrs.method) == "linear"
        and str(attrs.coordinate_transformation_mode) in COORDINATE_MODES
        and BLOCKED_OR_PLAIN.match(layout)
        and out_dtype in ("", "void", "None", "float32")
        and shape is not None
        and size is not None
        and size[0] >= shape[2]
    )
    if not taken:
        return tvm.ir.Op.get("relax.image.resize2d").get_attr("FLegalize")(bb, call)
    return bb.call_te(separable_bilinear, data, size[0], size[1], str(attrs.coordinate_transformation_mode), layout != "NCHW", primfunc_name_hint="resize2d")


def _static_size(size) -> list | None:
    """The output size as ints, if it is a constant shape."""
    try:
        return [int(d) for d in size.values] if isinstance(size, tvm.relax.ShapeExpr) else None
    except (TypeError, ValueError):
        return None
