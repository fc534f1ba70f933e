"""A ChatRequest -> the whole prompt as token ids, its images, and a key per token for reuse.

Clients resend the full history every time, so the server renders and tokenizes all of it, with
the engine's own chat template and image preprocessing (the same ids `python -m engine` reads).
Each token gets a reuse key: its id, or for an image token the image's content hash, so two
requests share a cached prefix only where the tokens and the pictures are the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine.errors import EngineError
from engine.image import PreparedImage, load_image, preprocess
from engine.tokens import ImageRun, Tokens

from .errors import ApiError
from .limits import Limits
from .schema import ChatRequest, ImagePart, TextPart

Key = int | str  # a token id, or an image's content hash for each of its tokens


@dataclass(frozen=True)
class ImageSpan:
    start: int  # index of the image's first token in the prompt
    end: int  # one past its last token
    image: PreparedImage


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    keys: list[Key]
    spans: list[ImageSpan]

    @property
    def tokens(self) -> Tokens:
        return Tokens(tuple(self.ids), tuple(ImageRun(s.start, s.end - s.start) for s in self.spans))

    def spans_from(self, start: int) -> list[ImageSpan]:
        """The images at or after token `start` (a prefix is never cut inside an image)."""
        return [s for s in self.spans if s.start >= start]


def build_prompt(engine, request: ChatRequest, limits: Limits = Limits()) -> Prompt:
    """Render, tokenize and preprocess; ApiError (400) for an unreadable image or template refusal."""
    messages, prepared, hashes = [], [], []
    for message in request.messages:
        content = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                prepared.append(_prepare(engine, part, limits))
                hashes.append(_image_key(part, engine.options.max_pixels(part.detail)))
                content.append({"type": "image"})
        messages.append({"role": message.role, "content": content})
    try:
        tokens = engine.prompts.encode_conversation(messages, [p.num_tokens for p in prepared])
    except EngineError as exc:
        raise ApiError(400, f"The conversation cannot be rendered: {exc}", "messages", "invalid_value") from None
    keys: list[Key] = list(tokens.ids)
    spans: list[ImageSpan] = []
    for run, image, key in zip(tokens.images, prepared, hashes):
        keys[run.start : run.end] = [key] * run.count
        spans.append(ImageSpan(run.start, run.end, image))
    return Prompt(list(tokens.ids), keys, spans)


def _prepare(engine, part: ImagePart, limits: Limits) -> PreparedImage:
    try:
        image = load_image(part.data, max_image_pixels=limits.max_image_pixels)
        return preprocess(image, engine.image_config, engine.options.max_pixels(part.detail))
    except EngineError as exc:
        raise ApiError(400, f"The image at {part.param} cannot be used: {exc}", part.param, "invalid_image") from None


def _image_key(part: ImagePart, max_pixels: int) -> str:
    """Same bytes at the same detail give the same tokens and embeddings."""
    return hashlib.sha256(part.data).hexdigest() + f"@{max_pixels}"
