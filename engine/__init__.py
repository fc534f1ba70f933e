"""Artifacts -> tokens: runs the exported Qwen3-VL graphs with onnxruntime. Never imports Qt."""
