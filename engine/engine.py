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
from .image import detail_pixels, tokens_for
from .load_checks import check_loaded
from .manifest import Manifest
from .model_parts import ModelParts
from .prompt import PromptBuilder, user_message
from .runtime import DecoderRunner, VisionRunner
from .sampling import SamplingOptions
from .speeds import SpeedModel
from .tokens import ImageGrid
from .turn_taking import TurnTaking

MIN_CONTEXT = 64  # room for the chat template, a short question and a short answer


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
    """Models whose int8 weights use more than 7 bits lose accuracy on x86 CPUs without VNNI or
    AMX (their int8 kernel saturates); say so instead of degrading silently."""
    if (
        not manifest.weights.uses_int8()
        or manifest.weights.int8_weight_max <= 63
        or cpu.arch != "x86_64"
        or cpu.int8_units
        or not cpu.int8_known
    ):  # (where the OS cannot tell, a warning could be wrong either way)
        return None
    return (
        "This model was converted by an earlier version of Iris: its int8 weights lose accuracy on this "
        f"processor ({cpu.summary()}). Convert the model again for exact results."
    )


def image_template_tokens(prompts: PromptBuilder, merge_size: int) -> int:
    """What the template writes with a question's first image besides its tokens: the turn's
    opening and the markers where the images come first, else the markers around one image."""
    empty_image = ImageGrid((1, 0, 0), merge_size)
    opening = prompts.encode_turn_prefix([], [empty_image])
    if opening is not None:
        return len(opening)
    try:
        with_image = prompts.encode_turn([], user_message("", 1), [empty_image])
        return len(with_image) - len(prompts.encode_turn([], user_message("", 0)))
    except EngineError as exc:
        raise ArtifactError(
            f"The model's chat template cannot hold an image ({exc}). Convert the model again."
        ) from None


class Engine:
    """Loads an artifact folder. Conversations take `turn_taking` while they generate, so the
    app's chat and the local server can take turns from different threads, each on its own KV
    cache; anything else that drives the decoder directly must take it too."""

    def __init__(self, model_dir: Path, options: EngineOptions = EngineOptions()):
        self.model_dir = Path(model_dir)
        self.options = options
        self.manifest = verify_artifacts(self.model_dir, full_hash=options.verify)
        context_limit = min(options.max_context, self.manifest.context_limit)
        self.tokenizer, vision, decoder = self._open_files(context_limit)
        check_loaded(self.manifest, self.tokenizer, vision, decoder)
        prompts = PromptBuilder(self.tokenizer, self.manifest.chat_template, self.manifest.tokens)
        self.cpu = cpu_info()
        # Things the user should know about this model on this machine (shown, never silent).
        self.warnings = [w for w in (saturating_int8_warning(self.manifest, self.cpu),) if w]
        self._image_template_tokens = image_template_tokens(prompts, self.manifest.vision.merge_size)
        self._active = None
        # All a conversation sees of the engine (built once: the parts never change; the engine's
        # own names for them below read these, so the two cannot drift apart).
        self.parts = ModelParts(
            decoder=decoder,
            vision=vision,
            prompts=prompts,
            image_config=self.manifest.image_processor,
            eos_ids=frozenset(self.manifest.tokens.eos),
            context_limit=context_limit,
            prefill_chunk=options.prefill_chunk,
            image_detail=options.image_detail,
            sampling=self.default_sampling(),
            speeds=SpeedModel(speed_key(self.manifest, self.cpu, options.threads), options.speed_file),
            turn_taking=TurnTaking(),  # the app's chat, the local server and calibration take turns
        )

    def _open_files(self, context_limit: int) -> tuple[Tokenizer, VisionRunner, DecoderRunner]:
        """The tokenizer, the vision graph and the decoder (with the prompt graph, if wanted and exported)."""
        m, options = self.manifest, self.options
        prefill = m.decoder.prefill_file if options.use_prefill_graph else None
        try:
            tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            vision = VisionRunner(
                self.model_dir / m.vision.file,
                options.threads,
                channels=m.vision.in_channels,
                profile_prefix=options.profile_prefix,
            )
            decoder = DecoderRunner(
                self.model_dir / m.decoder.file,
                m.decoder,
                context_limit,
                options.threads,
                self.model_dir / prefill if prefill else None,
                profile_prefix=options.profile_prefix,
            )
        except EngineError:
            raise
        except Exception as exc:  # onnxruntime refuses a damaged graph, `tokenizers` a damaged tokenizer
            raise ArtifactError(f"The model in {self.model_dir} cannot be loaded: {exc}") from None
        return tokenizer, vision, decoder

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

    def default_sampling(self, **overrides) -> SamplingOptions:
        """generation_config.json of the checkpoint plus the model card's advice for images."""
        return SamplingOptions.from_generation_config(self.manifest.generation, **overrides)

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
