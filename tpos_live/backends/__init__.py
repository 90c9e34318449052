"""Inference backends (torch eager today; ONNX Runtime and TensorRT follow in issue 5)."""
