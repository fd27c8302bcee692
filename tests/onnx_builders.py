"""Build small real ONNX graphs for tests: a fluent builder plus a few ready-made models.

Every model here passes ``onnx.checker`` and runs in onnxruntime, which is the reference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Append nodes one by one; names are generated, weights become initializers."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers, self.inputs = [], [], []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, shape, name: str = "x", dims=None) -> str:
        dims = dims if dims is not None else list(shape)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        return name

    def const(self, array, prefix: str = "w", dtype=np.float32) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name(op.lower() + "_")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    # layers -----------------------------------------------------------------
    def conv(self, x, cin, cout, kernel=3, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1, bias=True) -> str:
        k = kernel if isinstance(kernel, (tuple, list)) else (kernel, kernel)
        fan_in = cin // groups * k[0] * k[1]
        weight = self.rng.normal(0, np.sqrt(2.0 / fan_in), size=(cout, cin // groups, *k))
        inputs = [x, self.const(weight)]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, size=cout), "b"))
        s = stride if isinstance(stride, (tuple, list)) else (stride, stride)
        d = dilation if isinstance(dilation, (tuple, list)) else (dilation, dilation)
        return self.node("Conv", inputs, kernel_shape=list(k), strides=list(s), pads=list(pads), dilations=list(d), group=groups)

    def conv_transpose(self, x, cin, cout, kernel=3, stride=2, groups=1, bias=True) -> str:
        weight = self.rng.normal(0, np.sqrt(1.0 / (cin * kernel * kernel)), size=(cin, cout // groups, kernel, kernel))
        inputs = [x, self.const(weight)]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, size=cout), "b"))
        return self.node("ConvTranspose", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride], group=groups)

    def batchnorm(self, x, channels, negative_scales=False) -> str:
        gamma = self.rng.uniform(0.5, 1.5, size=channels)
        if negative_scales:
            gamma *= self.rng.choice([-1.0, 1.0], size=channels)
        beta = self.rng.normal(0, 0.3, size=channels)
        mean = self.rng.normal(0, 0.3, size=channels)
        var = self.rng.uniform(0.5, 2.0, size=channels)
        params = [self.const(p, "bn") for p in (gamma, beta, mean, var)]
        return self.node("BatchNormalization", [x, *params], epsilon=1e-5)

    def gemm(self, x, k, n, bias=True, trans_b=1) -> str:
        weight = self.rng.normal(0, np.sqrt(1.0 / k), size=(n, k) if trans_b else (k, n))
        inputs = [x, self.const(weight)]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, size=n), "b"))
        return self.node("Gemm", inputs, transB=trans_b)

    def relu(self, x) -> str:
        return self.node("Relu", [x])

    def model(self, outputs) -> onnx.ModelProto:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        graph = helper.make_graph(
            self.nodes,
            "slimtvm_test",
            self.inputs,
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model)
        # give outputs their inferred shapes so the model passes the full checker
        inferred = {v.name: v for v in model.graph.value_info}
        for out in model.graph.output:
            if out.name in inferred:
                out.CopyFrom(inferred[out.name])
        onnx.checker.check_model(model, full_check=True)
        return model


def bn_positions_model(seed: int = 0) -> onnx.ModelProto:
    """A CNN with batch norms in every foldable position (8) and one that is not.

    Conv→BN, Conv→Add(bias)→BN, BN→Conv (padded, strided, dilated), BN→grouped and depthwise
    convs, Conv→BN→BN (negative scales), ConvTranspose→BN (a graph output), BN→Gemm, Gemm→BN;
    and a BN after a ReLU feeding an Add, which is not foldable.
    """
    g = GraphBuilder(seed)
    x = g.input([1, 4, 12, 11])
    a = g.batchnorm(x, 4)  # graph input → BN → conv (padding: border correction)
    a = g.conv(a, 4, 8, kernel=3, stride=2, pads=(1, 2, 0, 1), dilation=(1, 2))
    a = g.batchnorm(a, 8)  # conv+bias → BN
    a = g.relu(a)
    b = g.batchnorm(a, 8)  # relu → BN → {grouped conv, depthwise conv}
    c1 = g.conv(b, 8, 8, kernel=1, groups=2, bias=False)
    c2 = g.conv(b, 8, 8, kernel=3, pads=(1, 1, 1, 1), groups=8, bias=False)
    c2 = g.batchnorm(c2, 8)  # depthwise conv → BN → BN
    c2 = g.batchnorm(c2, 8, negative_scales=True)
    s = g.node("Add", [c1, c2])
    r = g.relu(s)
    unfoldable = g.batchnorm(r, 8)  # relu → BN → add: decomposed
    s2 = g.node("Add", [unfoldable, r])
    t = g.conv_transpose(s2, 8, 4, kernel=3, stride=2, groups=2)
    t = g.batchnorm(t, 4)  # convT → BN (a graph output)
    p = g.node("GlobalAveragePool", [s2])
    f = g.node("Flatten", [p])
    f = g.batchnorm(f, 8)  # BN → Gemm
    y = g.gemm(f, 8, 5)
    y = g.batchnorm(y, 5)  # Gemm → BN
    return g.model([y, t])


def digits_like_input(shape, seed: int = 0) -> np.ndarray:
    """Random float32 input (standard normal), the tests' default."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
