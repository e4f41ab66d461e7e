"""Exporting Unmask's networks: `export.onnx` (ONNX + .pt + sidecar) and `export.build_engines` (TensorRT)."""
