"""Checkpoint -> artifacts: builds the ONNX graphs of Qwen3-VL from safetensors with numpy + onnx.

No torch, no transformers, no tracing: each graph is written node by node from the config, and the
weights are streamed tensor by tensor into external data.
"""

EXPORTER_VERSION = "0.1.0"
