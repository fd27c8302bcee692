"""Import ONNX constant-mode ``Pad`` on float tensors as Relax's ``nn.pad`` operator.

TVM 0.27's ONNX importer emits every Pad as a TE computation (an opaque ``call_tir``), which
neither ``ConvertLayout`` nor a graph pass can read. As ``relax.op.nn.pad`` (the same TOPI compute
once legalized, so the same values) the pad widths and value stay visible: the binary-layer
recognition folds a pad of 0 or ±1 in front of a binarized conv into the kernel (Larq's
one-padding). Other modes, non-float tensors and dynamic pads keep TVM's own conversion.

The importer looks its converters up through the module function ``_get_convert_map`` at each
node, so :func:`pad_as_relax_op` swaps that function for the duration of one import and restores
it after (apache-tvm is pinned to 0.27.0.post1; tests/test_larq_models.py fails if this stops
taking effect).
"""

from __future__ import annotations

import contextlib


def _converter(original):
    from tvm import relax

    class PadAsRelaxOp(original):
        @classmethod
        def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):
            data = inputs[0]
            mode = attr.get("mode", b"constant").decode("utf-8")
            dtype = str(getattr(data.ty, "dtype", ""))
            if mode == "constant" and dtype.startswith("float"):
                try:
                    before, after, value = cls._parse_pads_and_axes(inputs, params)
                except ValueError:
                    return super()._lower_pad(bb, inputs, attr, params, allowed_modes)
                widths = [int(v) for pair in zip(before, after) for v in pair]
                if min(widths) < 0:  # a negative pad crops: TVM's conversion handles it
                    return super()._lower_pad(bb, inputs, attr, params, allowed_modes)
                return bb.emit(relax.op.nn.pad(data, widths, "constant", float(value)))
            return super()._lower_pad(bb, inputs, attr, params, allowed_modes)

    return PadAsRelaxOp


@contextlib.contextmanager
def pad_as_relax_op():
    """Within the block, TVM's ONNX importer converts float constant Pads to ``relax.nn.pad``."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    converter = _converter(original()["Pad"])

    def convert_map():
        table = dict(original())
        table["Pad"] = converter
        return table

    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
