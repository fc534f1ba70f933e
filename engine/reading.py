"""Reading into the KV cache: encode images, then prefill token ids, with progress and timing.

Every step reports how far the whole read is in seconds of work predicted for this machine
(engine/speeds.py), and every step's measured time refines those predictions. Shared by the
questions of a conversation and by the images read ahead of them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EngineError
from .events import Progress, Stage, StatusEvent
from .image import ImageProcessorConfig, PreparedImage, load_image, preprocess
from .model_parts import ModelParts
from .positions import PositionState, token_positions
from .speeds import chunk_sizes
from .tokens import ImageGrid, Tokens

Encoded = tuple[np.ndarray, np.ndarray]  # image embeddings [T, H], DeepStack features [levels, T, H]


@dataclass
class ImageInput:
    """One image of a question: where it came from, a key for its content at its detail, its
    processor output and grid, and its encoding once the vision encoder has run."""

    source: object
    key: str
    image: PreparedImage
    grid: ImageGrid
    encoded: Encoded | None = None

    @property
    def patches(self) -> int:
        t, h, w = self.image.grid_thw
        return int(t * h * w)


@dataclass
class ReadResult:
    """What a read left: positions after it, the last row's logits, and the time it took."""

    positions: PositionState
    logits: np.ndarray | None
    vision_seconds: float
    prefill_seconds: float


def content_key(source, max_pixels: int) -> str | None:
    """The same picture at the same detail gives the same key, whatever path or copy it comes
    from (the app sends a stored copy of the file the user dropped); None if it cannot be read
    (load_image then says why)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        if isinstance(source, (str, Path)):
            digest.update(Path(source).read_bytes())
        elif isinstance(source, (bytes, bytearray, memoryview)):
            digest.update(bytes(source))
        elif isinstance(source, Image.Image):
            digest.update(f"{source.mode}{source.size}".encode())
            digest.update(source.tobytes())
        else:
            return None
    except OSError:
        return None
    return f"{digest.hexdigest()}@{max_pixels}"


def image_input(
    source, config: ImageProcessorConfig, max_pixels: int, key: str | None = None, max_image_pixels: int | None = None
) -> ImageInput:
    """Decode and preprocess one image (ImageError if it cannot be); `key` is its content_key."""
    image = preprocess(load_image(source, max_image_pixels), config, max_pixels)
    grid = ImageGrid(image.grid_thw, config.merge_size)
    return ImageInput(source, key or f"object-{id(source)}@{max_pixels}", image, grid)


def prepare_inputs(
    sources: Sequence, config: ImageProcessorConfig, max_pixels: int, known: Sequence[ImageInput] = ()
) -> list[ImageInput]:
    """ImageInputs for `sources`; those already known by content are reused (no decoding again,
    their encodings kept)."""
    by_key = {item.key: item for item in known}
    out = []
    for source in sources:
        key = content_key(source, max_pixels)
        out.append(by_key[key] if key in by_key else image_input(source, config, max_pixels, key))
    return out


@dataclass
class Plan:
    """The steps of a read (each image to encode, then each prompt chunk) and their predicted
    seconds, or their tokens while this machine is not measured yet (`timed` False)."""

    steps: list[float]
    timed: bool = True
    done: int = 0

    @property
    def seconds(self) -> float:
        return sum(self.steps) if self.timed else 0.0

    def then(self, other: Plan) -> Plan:
        """This plan followed by `other` (one progress for a read made of several). Seconds and
        tokens do not add up: if either is untimed, every step counts the same."""
        if self.timed and other.timed:
            return Plan(self.steps + other.steps)
        return Plan([1.0] * (len(self.steps) + len(other.steps)), timed=False)

    def step_done(self) -> None:
        self.done += 1

    def status(self, stage: Stage) -> StatusEvent:
        done = sum(self.steps[: self.done])
        upcoming = self.steps[self.done] if self.done < len(self.steps) else 0.0
        return StatusEvent(stage, Progress(done, sum(self.steps), upcoming, self.timed))


class Reader:
    """Encodes and prefills for one conversation on the decoder's bound cache."""

    def __init__(self, parts: ModelParts, should_stop: Callable[[], bool]):
        self.parts = parts
        self.should_stop = should_stop

    def plan(self, images: Sequence[ImageInput], tokens: int, context: int) -> Plan:
        """The steps of reading `images` (those not encoded yet) and then `tokens` after `context`
        cached ones, with the seconds this machine is predicted to take for each."""
        parts, speeds = self.parts, self.parts.speeds
        vision = [speeds.vision_seconds(item.patches) for item in images if item.encoded is None]
        chunks = speeds.chunk_plan(parts.decoder.graph_for, tokens, context, parts.prefill_chunk)
        if None in vision or None in chunks:  # not measured yet: count tokens
            vision = [float(item.grid.tokens) for item in images if item.encoded is None]
            chunks = [float(size) for size in chunk_sizes(tokens, parts.prefill_chunk)]
            return Plan(vision + chunks, timed=False)
        return Plan(vision + chunks)

    def read(
        self, tokens: Tokens, images: Sequence[ImageInput], positions: PositionState, plan: Plan | None = None
    ) -> Generator[StatusEvent, None, ReadResult | None]:
        """Encode the images that are not yet, then prefill `tokens` (which hold the images' runs,
        in order) from `positions`; None if stopped first (the cache is as it was). `plan` (default:
        this read's own) is what progress is reported against: a caller reading in several
        parts passes one plan for all of them."""
        if [item.grid for item in images] != [run.grid for run in tokens.images]:
            raise EngineError(f"The {len(images)} image(s) given are not the {len(tokens.images)} the tokens hold.")
        plan = plan or self.plan(images, len(tokens), self.parts.decoder.length)
        vision_seconds = yield from self._encode(images, plan)
        if vision_seconds is None or self.should_stop():
            return None
        positions_ids, after = token_positions(tokens, positions)
        yield plan.status(Stage.READING_PROMPT)
        t0 = time.perf_counter()
        logits = None
        if len(tokens):
            logits = yield from self._prefill(tokens, positions_ids, images, plan)
            if logits is None:
                return None
        self.parts.speeds.save()
        return ReadResult(after, logits, vision_seconds, time.perf_counter() - t0)

    def _encode(self, images: Sequence[ImageInput], plan: Plan) -> Generator[StatusEvent, None, float | None]:
        """Encode the images that are not yet; the seconds it took, or None if stopped."""
        seconds = 0.0
        for item in images:
            if item.encoded is not None:
                continue
            if self.should_stop():
                return None
            yield plan.status(Stage.ENCODING_IMAGE)
            t0 = time.perf_counter()
            item.encoded = self.parts.vision.encode(item.image.pixel_values, item.image.grid_thw)
            took = time.perf_counter() - t0
            seconds += took
            self.parts.speeds.add_vision(item.patches, took)
            plan.step_done()
        return seconds

    def _prefill(
        self, tokens: Tokens, positions_ids: np.ndarray, images: Sequence[ImageInput], plan: Plan
    ) -> Generator[StatusEvent, None, np.ndarray | None]:
        """Read `tokens` into the cache chunk by chunk; the logits, or None if stopped."""
        parts = self.parts
        reading = parts.decoder.prefill_steps(
            np.asarray(tokens.ids),
            positions_ids,
            *self._visual(tokens, images),
            chunk=parts.prefill_chunk,
            should_stop=self.should_stop,
        )
        while True:
            try:
                chunk = next(reading)
            except StopIteration as finished:
                return finished.value
            parts.speeds.add_chunk(chunk.graph, chunk.tokens, chunk.context, chunk.seconds)
            plan.step_done()
            if chunk.done < chunk.total:
                yield plan.status(Stage.READING_PROMPT)

    @staticmethod
    def _visual(tokens: Tokens, images: Sequence[ImageInput]):
        if not images:
            return ()
        return (
            np.concatenate([item.encoded[0] for item in images], 0),
            np.asarray(tokens.image_rows(), np.int64),
            np.concatenate([item.encoded[1] for item in images], 1),
        )
