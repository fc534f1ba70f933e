"""Running the transformers reference and our exported graphs side by side (tests only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parent / "data" / "qwen3vl"
IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653


def image_processor(max_pixels: int | None = None):
    """transformers' Qwen2-VL image processor (PIL backend), configured from the real JSON."""
    from transformers import Qwen2VLImageProcessorPil

    cfg = json.loads((DATA / "preprocessor_config.json").read_text())
    if max_pixels is not None:
        cfg["size"] = {"shortest_edge": cfg["size"]["shortest_edge"], "longest_edge": max_pixels}
    return Qwen2VLImageProcessorPil(**cfg)


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random image (gradients + noise), so resizing has real content to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (x * 255 // max(width - 1, 1)),
            (y * 255 // max(height - 1, 1)),
            ((x + y) * 127 // max(width + height - 2, 1)),
        ],
        -1,
    )
    noise = rng.integers(-40, 40, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


@dataclass
class Prompt:
    ids: list[int]
    pixel_values: object  # torch tensor [N, 1536] or None
    grid_thw: object  # torch tensor [1, 3] or None


def image_prompt(image: Image.Image | None, text_ids=(74785, 419, 2168, 13), max_pixels=None) -> Prompt:
    """A chat-formatted prompt with one image (or none), as the processor would build it."""
    head = [151644, 872, 198]
    tail = list(text_ids) + [151645, 198, 151644, 77091, 198]
    if image is None:
        return Prompt(head + tail, None, None)
    out = image_processor(max_pixels)(images=[image], return_tensors="pt")
    n = int(out["image_grid_thw"].prod()) // 4
    return Prompt(
        head + [VISION_START] + [IMAGE_PAD] * n + [VISION_END] + tail, out["pixel_values"], out["image_grid_thw"]
    )


def reference_rope(model, prompt: Prompt):
    import torch

    ids = torch.tensor([prompt.ids])
    mm = (ids == IMAGE_PAD).int()
    pos, delta = model.model.get_rope_index(ids, mm, image_grid_thw=prompt.grid_thw)
    return pos[:, 0].numpy(), int(delta[0, 0])


def _model_inputs(prompt: Prompt) -> dict:
    import torch

    ids = torch.tensor([prompt.ids])
    inputs = {"input_ids": ids}
    if prompt.pixel_values is not None:
        inputs.update(
            pixel_values=prompt.pixel_values, image_grid_thw=prompt.grid_thw, mm_token_type_ids=(ids == IMAGE_PAD).int()
        )
    return inputs


def reference_logits(model, prompt: Prompt) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(**_model_inputs(prompt)).logits[0].float().numpy()


def reference_greedy(model, prompt: Prompt, steps: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            **_model_inputs(prompt), max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=151643
        )
    return out[0, len(prompt.ids) :].tolist()


class ExportedModel:
    """The exported graphs driven directly (vision once, decoder prefill, then greedy steps)."""

    def __init__(self, artifact_dir: Path, max_len: int = 1024):
        from engine.manifest import Manifest
        from engine.runtime import DecoderRunner, VisionRunner

        d = Manifest.load(artifact_dir).decoder
        self.vision = VisionRunner(Path(artifact_dir) / "vision.onnx")
        self.decoder = DecoderRunner(Path(artifact_dir) / "decoder.onnx", d, max_len)

    def encode(self, prompt: Prompt):
        return self.vision.encode(prompt.pixel_values.numpy(), tuple(prompt.grid_thw[0].tolist()))

    def prefill(self, prompt: Prompt, positions: np.ndarray, all_logits: bool = False, drop_deepstack=False):
        self.decoder.reset()
        ids = np.array(prompt.ids)
        vis = {}
        if prompt.pixel_values is not None:
            embeds, deep = self.encode(prompt)
            if drop_deepstack:
                deep = np.zeros_like(deep)
            vis = dict(visual_embeds=embeds, visual_pos=np.nonzero(ids == IMAGE_PAD)[0], deepstack=deep)
        logits_pos = np.arange(len(ids)) if all_logits else None
        return self.decoder.forward(ids, positions, logits_pos=logits_pos, **vis)

    def greedy(self, prompt: Prompt, positions: np.ndarray, delta: int, steps: int) -> list[int]:
        logits = self.prefill(prompt, positions)
        tokens = [int(np.argmax(logits[-1]))]
        for i in range(steps - 1):
            p = len(prompt.ids) + i + delta
            logits = self.decoder.forward(np.array([tokens[-1]]), np.full((3, 1), p))
            tokens.append(int(np.argmax(logits[-1])))
        return tokens
