"""Export larq-zoo networks the way Larq users do: tf2onnx at opset 17 (and LCE's flatbuffer of the
same Keras model, for benchmarks/lce_comparison.py).

    bash scripts/setup_lce_venv.sh                                      # once: TF, Larq, LCE, tf2onnx
    .venv-lce/bin/python scripts/export_larq_models.py OUT_DIR [--models birealnet,quicknet_small,quicknet] [--tiny]

Random weights (``weights=None``) with randomised batch-norm statistics (otherwise every BN is the
identity and a wrong fold would go unseen), seeded, so both files of one name hold the same network.
Writes ``NAME.onnx`` and ``NAME.tflite`` per model and ``larq_models.json`` with how many binary
``QuantConv2D`` layers (input and kernel quantizers both set) each has: the count ``slimtvm compile``
must report (benchmarks/larq_models.py checks it).
``--tiny`` writes ``larq_tiny.onnx`` only: a small Larq network (binary convs with one-padding,
``ste_sign`` inputs, a max-pool, BN) that the test suite keeps as a fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MODELS = {"birealnet": ("literature", "BiRealNet"), "quicknet_small": ("sota", "QuickNetSmall"), "quicknet": ("sota", "QuickNet")}


def randomise_batch_norms(model, seed: int) -> None:
    """Random γ, β, moving mean and variance (> 0.1) for every BatchNormalization layer."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                name = weight.name.split("/")[-1]
                shape = tuple(weight.shape)
                if "variance" in name:
                    values.append(rng.uniform(0.1, 2.0, shape))
                elif "gamma" in name:
                    values.append(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape))
                else:
                    values.append(rng.normal(0.0, 0.5, shape))
            layer.set_weights([v.astype(np.float32) for v in values])


def binary_conv_count(model) -> int:
    import larq as lq

    def quantized(layer):
        return isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None and layer.kernel_quantizer is not None

    return sum(quantized(layer) for layer in model.layers)


def tiny_model(seed: int):
    """A small Larq network: float stem, two binary convs with one-padding, a max-pool, a
    binary 1×1 conv, BN after each, a float classifier."""
    import larq as lq
    import tensorflow as tf

    tf.random.set_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    inputs = tf.keras.Input((16, 16, 3))
    x = tf.keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    y = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, **binary)(x)
    y = tf.keras.layers.BatchNormalization(momentum=0.9)(y)
    x = tf.keras.layers.add([x, y])
    x = tf.keras.layers.MaxPool2D(2)(x)
    x = lq.layers.QuantConv2D(64, 3, strides=2, padding="same", pad_values=1.0, **binary)(x)
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    x = lq.layers.QuantConv2D(64, 1, **binary)(x)
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    return tf.keras.Model(inputs, outputs)


def export_onnx(model, path: str) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    onnx.save(proto, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tiny", action="store_true", help="write larq_tiny.onnx (the test fixture) only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import larq_zoo

    os.makedirs(args.out_dir, exist_ok=True)
    if args.tiny:
        model = tiny_model(args.seed)
        randomise_batch_norms(model, args.seed)
        export_onnx(model, os.path.join(args.out_dir, "larq_tiny.onnx"))
        counts = {"larq_tiny": {"binary_convs": binary_conv_count(model)}}
        print(json.dumps(counts))
        return 0
    import larq_compute_engine as lce
    import tensorflow as tf

    counts = {}
    for name in args.models.split(","):
        if name not in MODELS:
            print(f"unknown model {name!r}: choose from {', '.join(MODELS)}", file=sys.stderr)
            return 2
        family, cls = MODELS[name]
        tf.random.set_seed(args.seed)
        model = getattr(getattr(larq_zoo, family), cls)(weights=None)
        randomise_batch_norms(model, args.seed)
        export_onnx(model, os.path.join(args.out_dir, f"{name}.onnx"))
        with open(os.path.join(args.out_dir, f"{name}.tflite"), "wb") as file:
            file.write(lce.convert_keras_model(model))
        counts[name] = {"binary_convs": binary_conv_count(model)}
        print(f"{name}: {counts[name]['binary_convs']} binary QuantConv2D layers", flush=True)
    with open(os.path.join(args.out_dir, "larq_models.json"), "w") as file:
        json.dump(counts, file, indent=2)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
