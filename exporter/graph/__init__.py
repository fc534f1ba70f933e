"""ONNX graph construction, one component per module (no tracing)."""
