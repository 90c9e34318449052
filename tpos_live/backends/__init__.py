"""Inference backends behind one protocol: torch (eager, compiled, bf16), ONNX Runtime, TensorRT.

``registry.create_backend`` makes one by name; the renderer cannot tell which it runs on.
"""
