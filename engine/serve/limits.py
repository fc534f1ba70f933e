"""What one request may ask of the server: a local model server must not be easy to exhaust."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 48 * 2**20  # a request, images included as base64
    max_image_bytes: int = 20 * 2**20  # one decoded image file
    max_image_pixels: int = 50_000_000  # one image once decoded (decompression bombs)
    max_images: int = 16  # per request
    max_messages: int = 1000  # per request
    max_stop: int = 4  # stop sequences, as OpenAI allows
    max_waiting: int = 4  # requests queued behind the one being answered
    slots: int = 2  # conversations whose KV cache is kept for reuse
