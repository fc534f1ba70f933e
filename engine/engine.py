"""The engine: one loaded model (both graphs, tokenizer, settings) and the conversations on it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
from tokenizers import Tokenizer

from .artifacts import verify_artifacts
from .cpu import CpuInfo, cpu_info
from .errors import ArtifactError, EngineError
from .image import ImageProcessorConfig, detail_pixels, tokens_for
from .manifest import Manifest
from .model_parts import ModelParts
from .prompt import PromptBuilder
from .runtime import DecoderRunner, VisionRunner
from .sampling import SamplingOptions
from .speeds import SpeedModel
from .tokens import ImageGrid
from .turn_taking import TurnTaking

MIN_CONTEXT = 64  # room for the chat template, a short question and a short answer
IMAGE_TEMPLATE_TOKENS = 2  # the markers around an image's tokens, where the template does not say


@dataclass(frozen=True)
class ReadEstimate:
    tokens: int
    seconds: float | None  # None until this machine's speeds are measured


def speed_key(manifest: Manifest, cpu: CpuInfo, threads: int | None) -> str:
    """Speeds depend on the model's files, the processor, the thread count and onnxruntime."""
    files = {name: record.sha256 for name, record in manifest.files.items()}
    files = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return f"{files}|{cpu.vendor} {cpu.model}|{threads or cpu.physical_cores} threads|ort {onnxruntime.__version__}"


@dataclass(frozen=True)
class EngineOptions:
    threads: int | None = None  # None: one per physical core
    max_context: int = 8192  # KV-cache slots; a conversation cannot grow past this
    image_detail: str = "standard"  # a key of DETAIL_PRESETS
    verify: bool | None = None  # hash check: None = only files changed since last check
    prefill_chunk: int = 256  # prompts are read in chunks: attention scratch is chunk x max_len
    use_prefill_graph: bool = True  # use the model's prompt decoder when it was exported with one
    profile_prefix: str | None = None  # write onnxruntime traces (per-node times) with this path prefix
    speed_file: Path | None = None  # where this machine's measured speeds are kept (None: memory only)

    def __post_init__(self):
        if self.max_context < MIN_CONTEXT:
            raise EngineError(f"max_context must be at least {MIN_CONTEXT} tokens (got {self.max_context})")
        if self.threads is not None and self.threads < 1:
            raise EngineError(f"threads must be at least 1 (got {self.threads})")
        if self.prefill_chunk < 1:
            raise EngineError(f"prefill_chunk must be at least 1 (got {self.prefill_chunk})")
        self.max_pixels()  # the image detail is one we know

    def max_pixels(self, detail: str | None = None) -> int:
        return detail_pixels(detail or self.image_detail)


def saturating_int8_warning(manifest: Manifest, cpu: CpuInfo) -> str | None:
    """Models converted before int8 weights were limited to 7 bits lose accuracy on x86 CPUs
    without VNNI or AMX (their int8 kernel saturates); say so instead of degrading silently."""
    weights = manifest.weights or {}
    uses_int8 = (weights.get("vision") or {}).get("kind") == "int8" or manifest.decoder.prefill_weights == "int8"
    if (
        not uses_int8
        or weights.get("int8_weight_max", 127) <= 63
        or cpu.arch != "x86_64"
        or cpu.int8_units
        or not cpu.int8_known
    ):  # (where the OS cannot tell, a warning could be wrong either way)
        return None
    return (
        "This model was converted by an earlier version of Iris: its int8 weights lose accuracy on this "
        f"processor ({cpu.summary()}). Convert the model again for exact results."
    )


class Engine:
    """Loads an artifact folder. Conversations take `turn_taking` while they generate, so the
    app's chat and the local server can take turns from different threads, each on its own KV
    cache; anything else that drives the decoder directly must take it too."""

    def __init__(self, model_dir: Path, options: EngineOptions = EngineOptions()):
        self.model_dir = Path(model_dir)
        self.options = options
        self.manifest = verify_artifacts(self.model_dir, full_hash=options.verify)
        m = self.manifest
        try:
            self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            prompts = PromptBuilder(
                self.tokenizer,
                m.chat_template,
                image_pad=self._token(m.tokens.image),
                end_of_turn=self._token(m.tokens.im_end),
            )
            image_config = ImageProcessorConfig.from_preprocessor_json(m.image_processor)
            d = m.decoder
            self.shape = d  # the KV cache's shapes
            context_limit = min(options.max_context, int(m.context_limit))
            vision = VisionRunner(
                self.model_dir / m.vision.file,
                options.threads,
                channels=int(m.model["vision"].get("in_channels", 3)),
                profile_prefix=options.profile_prefix,
            )
            prefill = d.prefill_file if options.use_prefill_graph else None
            decoder = DecoderRunner(
                self.model_dir / d.file,
                self.shape,
                context_limit,
                options.threads,
                self.model_dir / prefill if prefill else None,
                profile_prefix=options.profile_prefix,
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"The model's manifest lacks {exc}; convert the model again.") from None
        except EngineError:
            raise
        except Exception as exc:  # onnxruntime refuses a damaged graph
            raise ArtifactError(f"The model in {self.model_dir} cannot be loaded: {exc}") from None
        self.cpu = cpu_info()
        speeds = SpeedModel(speed_key(m, self.cpu, options.threads), options.speed_file)
        # Things the user should know about this model on this machine (shown, never silent).
        self.warnings = [w for w in (saturating_int8_warning(m, self.cpu),) if w]
        eos_ids = frozenset(m.tokens.eos)
        self.image_token_id = prompts.image_token_id
        merge_size = m.vision.merge_size
        # What the template writes with a question's first image besides its tokens (turn opening, markers).
        opening = prompts.encode_turn_prefix([], [ImageGrid((1, 0, 0), merge_size)])
        self._image_template_tokens = len(opening) if opening is not None else IMAGE_TEMPLATE_TOKENS
        self._active = None
        turn_taking = TurnTaking()  # the app's chat, the local server and calibration take turns
        # All a conversation sees of the engine (built once: the parts never change; the engine's
        # own names for them below read these, so the two cannot drift apart).
        self.parts = ModelParts(
            decoder=decoder,
            vision=vision,
            prompts=prompts,
            image_config=image_config,
            merge_size=merge_size,
            eos_ids=eos_ids,
            context_limit=context_limit,
            prefill_chunk=options.prefill_chunk,
            image_detail=options.image_detail,
            sampling=self.default_sampling(),
            speeds=speeds,
            turn_taking=turn_taking,
        )

    # The model's parts, under the names the app, the server and calibration use: read from
    # `parts`, so a conversation and the engine always see the same ones.
    decoder = property(lambda self: self.parts.decoder)
    vision = property(lambda self: self.parts.vision)
    prompts = property(lambda self: self.parts.prompts)
    image_config = property(lambda self: self.parts.image_config)
    merge_size = property(lambda self: self.parts.merge_size)
    eos_ids = property(lambda self: self.parts.eos_ids)
    context_limit = property(lambda self: self.parts.context_limit)
    speeds = property(lambda self: self.parts.speeds)
    turn_taking = property(lambda self: self.parts.turn_taking)

    def _token(self, token_id: int) -> str:
        """The text of a special token the manifest names, as the tokenizer spells it."""
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise ArtifactError(
                f"The tokenizer has no token {token_id}, which the model's manifest names. Convert the model again."
            )
        return token

    def default_sampling(self, **overrides) -> SamplingOptions:
        """generation_config.json of the checkpoint plus the model card's advice for images."""
        return SamplingOptions.from_generation_config(self.manifest.generation or {}, **overrides)

    def image_tokens(self, width: int, height: int, image_detail: str | None = None) -> int:
        return tokens_for(width, height, self.image_config, self.options.max_pixels(image_detail))

    def estimate_image(
        self, width: int, height: int, image_detail: str | None = None, context: int = 0
    ) -> ReadEstimate:
        """Tokens of an image and the seconds this machine takes to read it (encode it, then its
        tokens after `context` cached ones), from the speeds measured here; no seconds before
        any. Pure arithmetic on immutable config and the thread-safe speed model: any thread."""
        tokens = self.image_tokens(width, height, image_detail)
        vision = self.speeds.vision_seconds(tokens * self.merge_size**2)
        prompt = self.speeds.prompt_seconds(
            self.decoder.graph_for, tokens + self._image_template_tokens, context, self.options.prefill_chunk
        )
        return ReadEstimate(tokens, None if vision is None or prompt is None else vision + prompt)

    def calibrate(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Measure this machine's speeds where none are stored yet (a few seconds); see calibration.py."""
        from .calibration import calibrate

        return calibrate(self, should_stop)

    @property
    def active_conversation(self):
        """The conversation on the default KV cache (the app's chat), if one was started."""
        return self._active

    def new_conversation(self):
        """A fresh conversation; it takes over the KV cache from any earlier one."""
        from .conversation import Conversation

        if self._active is not None:
            self._active.close()
        self._active = Conversation(self.parts)
        return self._active

    def smoke_test(self) -> None:
        """One token about a small image: proves both graphs run on this machine."""
        from PIL import Image

        conv = self.new_conversation()
        stats = None
        image = Image.new("RGB", (64, 64), (128, 96, 160))
        for event in conv.ask("Hi", images=[image], sampling=SamplingOptions(greedy=True, max_new_tokens=1)):
            stats = event
        if stats is None or getattr(stats, "new_tokens", 0) != 1:
            raise EngineError("The model did not produce a token.")
        self.new_conversation()
