"""What a conversation runs on: the parts of one loaded model, and nothing else of the engine.

The Engine builds one ModelParts when it loads a model and gives it to every Conversation (and
its Reader), so a conversation can be built and understood from this list alone: it cannot see
the manifest, the files, the thread count or the conversations before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .image import ImageProcessorConfig, detail_pixels
from .prompt import PromptBuilder
from .runtime import DecoderRunner, VisionRunner
from .sampling import SamplingOptions
from .speeds import SpeedModel
from .turn_taking import TurnTaking


@dataclass(frozen=True)
class ModelParts:
    decoder: DecoderRunner  # the one decoder; a conversation binds its own KV cache to it
    vision: VisionRunner
    prompts: PromptBuilder  # chat template + tokenizer: ids of turns, text of answers
    image_config: ImageProcessorConfig  # how images are resized and cut into patches
    eos_ids: frozenset[int]  # tokens that end an answer
    context_limit: int  # KV-cache slots: no turn may grow the cache past this
    prefill_chunk: int  # prompts are read this many tokens at a time
    image_detail: str  # the detail of images whose question names none (a key of DETAIL_PRESETS)
    sampling: SamplingOptions  # how an answer is sampled when the question says nothing
    speeds: SpeedModel  # this machine's measured speeds: predicts waits, learns from each read
    turn_taking: TurnTaking  # shared with the local server: one generation at a time

    @property
    def merge_size(self) -> int:
        """Patches per image token, per side (the image processor's, which the manifest checked
        against the vision graph's)."""
        return self.image_config.merge_size

    def max_pixels(self, detail: str | None = None) -> int:
        """The pixel budget of `detail`, or of the default detail."""
        return detail_pixels(detail or self.image_detail)
