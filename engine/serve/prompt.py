"""A ChatRequest -> the whole prompt as tokens, its images, and a key per token for reuse.

Clients resend the full history every time, so the server renders and tokenizes all of it, with
the engine's own chat template and image preprocessing (the same tokens `python -m engine` reads).
Each token gets a reuse key: its id, or for an image token the image's content key, so two
requests share a cached prefix only where the tokens and the pictures are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import EngineError
from engine.reading import ImageInput, content_key, image_input
from engine.tokens import Tokens

from .errors import ApiError
from .limits import Limits
from .schema import ChatRequest, ImagePart, TextPart

Key = int | str  # a token id, or an image's content key for each of its tokens


@dataclass(frozen=True)
class Prompt:
    tokens: Tokens  # with each image's run
    keys: list[Key]
    images: list[ImageInput]  # one per run of `tokens`, in order

    def images_from(self, start: int) -> list[ImageInput]:
        """The images at or after token `start` (a prefix is never cut inside an image)."""
        return [image for run, image in zip(self.tokens.images, self.images) if run.start >= start]


def build_prompt(engine, request: ChatRequest, limits: Limits = Limits()) -> Prompt:
    """Render, tokenize and preprocess; ApiError (400) for an unreadable image or template refusal."""
    messages, images = [], []
    for message in request.messages:
        content = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                images.append(_prepare(engine, part, limits))
                content.append({"type": "image"})
        messages.append({"role": message.role, "content": content})
    try:
        tokens = engine.prompts.encode_conversation(messages, [image.grid for image in images])
    except EngineError as exc:
        raise ApiError(400, f"The conversation cannot be rendered: {exc}", "messages", "invalid_value") from None
    keys: list[Key] = list(tokens.ids)
    for run, image in zip(tokens.images, images):
        keys[run.start : run.end] = [image.key] * run.count
    return Prompt(tokens, keys, images)


def _prepare(engine, part: ImagePart, limits: Limits) -> ImageInput:
    """Same bytes at the same detail get the same key, so the same tokens and embeddings."""
    max_pixels = engine.options.max_pixels(part.detail)
    try:
        return image_input(
            part.data, engine.image_config, max_pixels, content_key(part.data, max_pixels), limits.max_image_pixels
        )
    except EngineError as exc:
        raise ApiError(400, f"The image at {part.param} cannot be used: {exc}", part.param, "invalid_image") from None
