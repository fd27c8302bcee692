"""ONNX in: load and check a model, resolve its input shapes, import it to Relax."""
