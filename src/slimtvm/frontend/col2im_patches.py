"""``Col2Im`` of non-overlapping patches as a reshape, a transpose and a reshape.

MobileViTV2 (Hugging Face's ``MobileViTV2Model``) folds its transformer's patches back into a
feature map with ``torch.nn.functional.fold``, which torch's exporters write as ONNX ``Col2Im``
(opset 18); TVM 0.27's ONNX importer has no ``Col2Im`` and refused the model. When the patches
do not overlap (stride = block shape, no padding, unit dilation, the image a whole number of
blocks), ``Col2Im`` sums nothing: every output pixel is one input value,

    out[n, c, i·kh + a, j·kw + b] = in[n, (c·kh + a)·kw + b, i·(W/kw) + j],

that is ``Reshape [N, C, kh, kw, H/kh, W/kw] → Transpose [0, 1, 4, 2, 5, 3] → Reshape [N, C, H,
W]`` — exact, no arithmetic. Rewritten: every default-domain ``Col2Im`` whose ``image_shape`` and
``block_shape`` are constants of two values and whose input's shape is known, under those
conditions. Overlapping patches (a sum) stay, and the importer names the operator.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fold_shapes import static_shapes
from .onnx_model import constant_arrays


def col2im_as_reshapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of ``model`` with its non-overlapping ``Col2Im`` nodes as reshapes, how many), or
    ``model`` itself and 0."""
    if not any(node.op_type == "Col2Im" for node in model.graph.node):
        return model, 0
    constants = constant_arrays(model.graph)
    shapes = static_shapes(model)
    plans = [_plan(node, constants, shapes) for node in model.graph.node]  # by node position
    count = sum(plan is not None for plan in plans)
    if not count:
        return model, 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    nodes = []
    for plan, node in zip(plans, graph.node):
        if plan is None:
            nodes.append(node)
            continue
        blocks_shape, image_shape = plan
        prefix = f"{node.name or node.output[0]}__slimtvm_patches"
        graph.initializer.append(numpy_helper.from_array(np.array(blocks_shape, np.int64), f"{prefix}_blocks_shape"))
        graph.initializer.append(numpy_helper.from_array(np.array(image_shape, np.int64), f"{prefix}_image_shape"))
        nodes.append(helper.make_node("Reshape", [node.input[0], f"{prefix}_blocks_shape"], [f"{prefix}_blocks"], name=f"{prefix}_reshape"))
        nodes.append(helper.make_node("Transpose", [f"{prefix}_blocks"], [f"{prefix}_rows"], name=f"{prefix}_transpose", perm=[0, 1, 4, 2, 5, 3]))
        nodes.append(helper.make_node("Reshape", [f"{prefix}_rows", f"{prefix}_image_shape"], [node.output[0]], name=prefix))
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten, count


def _plan(node, constants: dict, shapes: dict) -> tuple | None:
    """(the blocks' shape ``[N, C, kh, kw, H/kh, W/kw]``, the image's ``[N, C, H, W]``) when
    ``node`` is a ``Col2Im`` of non-overlapping patches of known shapes, else None."""
    if node.op_type != "Col2Im" or node.domain not in ("", "ai.onnx") or len(node.input) != 3:
        return None
    image, block = constants.get(node.input[1]), constants.get(node.input[2])
    shape = shapes.get(node.input[0])
    if image is None or block is None or shape is None or image.size != 2 or block.size != 2 or len(shape) != 3:
        return None
    (height, width), (kh, kw) = (int(v) for v in image.reshape(-1)), (int(v) for v in block.reshape(-1))
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    if list(attrs.get("strides", [1, 1])) != [kh, kw] or any(attrs.get("pads", [0] * 4)) or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return None
    if kh <= 0 or kw <= 0 or height % kh or width % kw:
        return None
    batch, rows, patches = shape
    if rows % (kh * kw) or patches != (height // kh) * (width // kw):
        return None
    channels = rows // (kh * kw)
    return [batch, channels, kh, kw, height // kh, width // kw], [batch, channels, height, width]
