"""One export: checkpoint folder -> artifact folder, atomically, with progress and cancel.

Everything is written into a temporary folder beside the target and renamed at the very end, so an
interrupted or failed export never leaves a folder that looks complete, and a re-run just works
(exporter.target: the folder's checks, its lock against a second export, leftovers of killed ones).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from engine.file_stamps import sha256_file, write_verified
from engine.image import ImageProcessorConfig
from engine.manifest import (
    DecoderSection,
    FileRecord,
    Manifest,
    SourceSection,
    TokenIds,
    VisionSection,
    WeightsSection,
    image_geometry_mismatch,
)

from . import EXPORTER_VERSION
from .checkpoint import Checkpoint
from .config import ModelConfig, VisionConfig, load_config
from .disk_space import check_free_space
from .errors import CheckpointError, ExportCancelled, ExportError
from .graph.builder import GraphBuilder
from .graph.decoder import build_decoder
from .graph.ops import FP32, WeightFormat
from .graph.vision import build_vision
from .quantize import INT8_WEIGHT_MAX
from .side_files import read_side_files
from .target import check_target, clean_stale, explain_write_error, locked_target, partial_dir, replace_target
from .tensor_spec import text_tensors, vision_tensors
from .writer import ExternalDataWriter

PRECISIONS = ("int4", "fp32")
VISION_FORMATS = ("int8", "int8-block", "fp32")
PREFILL_FORMATS = ("int8", "fp32")
KV_CACHE_FORMATS = ("fp32", "fp16")
DEFAULT_BLOCK_SIZE = 128  # decoder linear layers (see README: measured choice)
DEFAULT_EMBED_BLOCK_SIZE = 32  # the tied embedding / lm_head: finer blocks for logits and inputs
DEFAULT_ACCURACY_LEVEL = 4
END_OF_TURN = "<|im_end|>"  # Qwen's chat templates close each turn with it


@dataclass(frozen=True)
class ExportOptions:
    precision: str = "int4"
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    overwrite: bool = False
    embed_block_size: int = DEFAULT_EMBED_BLOCK_SIZE
    vision: str | None = None  # None: int8 with int4 decoders, fp32 with the fp32 reference
    # An optional second decoder graph for prompts: int8 weights run onnxruntime's integer GEMM
    # ~7x faster than int4 on prompt-sized matmuls, at the cost of ~1 byte per weight more.
    prefill: str | None = None
    # None: fp16 with int4 decoders (half the cache memory: 3.7-3.8 instead of 4.2 GB at a 4k
    # context, for 2-7% of decode speed at short contexts and 19-23% at 4k), fp32 for the reference
    kv_cache: str | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.vision is not None and self.vision not in VISION_FORMATS:
            raise ExportError(f"unknown vision format '{self.vision}'; choose one of {', '.join(VISION_FORMATS)}")
        if self.prefill is not None and self.prefill not in PREFILL_FORMATS:
            raise ExportError(f"unknown prefill format '{self.prefill}'; choose one of {', '.join(PREFILL_FORMATS)}")
        if self.kv_cache is not None and self.kv_cache not in KV_CACHE_FORMATS:
            raise ExportError(f"unknown KV cache format '{self.kv_cache}'; choose one of {', '.join(KV_CACHE_FORMATS)}")

    def decoder_format(self) -> WeightFormat:
        if self.precision == "fp32":
            return FP32
        return WeightFormat("int4", self.block_size, self.accuracy_level)

    def embedding_format(self) -> WeightFormat:
        if self.precision == "fp32":
            return FP32
        return WeightFormat("int4", self.embed_block_size, self.accuracy_level)

    def kv_cache_format(self) -> str:
        return self.kv_cache or ("fp32" if self.precision == "fp32" else "fp16")

    def vision_format(self) -> WeightFormat:
        return WeightFormat(self.vision or ("fp32" if self.precision == "fp32" else "int8"))


@dataclass(frozen=True)
class ExportProgress:
    stage: str  # "checking", "vision", "decoder", "finishing"
    done: int
    total: int


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    seconds: float
    files: dict[str, int]  # name -> bytes

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def estimate_bytes(cfg: ModelConfig, options: ExportOptions) -> int:
    """Upper estimate of the artifact size, for the free-space check."""
    bytes_per_weight = {"fp32": 4.0, "int8": 1.0, "int8-block": 1 + 5 / 32}[options.vision_format().kind]
    vision = int(sum(int(np.prod(s)) for s in vision_tensors(cfg).values()) * bytes_per_weight)
    text = sum(int(np.prod(s)) for s in text_tensors(cfg).values())
    if options.prefill:
        vision += text * (1 if options.prefill == "int8" else 4)
    if options.precision == "fp32":
        return vision + text * 4
    per_weight = 0.5 + 4.5 / min(options.block_size, options.embed_block_size)  # nibble + scale, zero point
    return vision + int(text * per_weight)


SPACE_MARGIN_FACTOR = 1.05  # the estimate is close, not exact
SPACE_MARGIN_BYTES = 64 << 20  # and the disk must not end completely full


def free_space_needed(estimated_bytes: int) -> int:
    """What must be free before converting to an artifact folder of `estimated_bytes` (the
    setup wizard shows and checks the same figure)."""
    return int(estimated_bytes * SPACE_MARGIN_FACTOR) + SPACE_MARGIN_BYTES


def export_model(
    source: Path,
    out_dir: Path,
    options: ExportOptions = ExportOptions(),
    progress: Callable[[ExportProgress], None] | None = None,
    cancel: threading.Event | None = None,
    source_info: dict | None = None,
) -> ExportResult:
    """Convert the checkpoint in `source` into an artifact folder at `out_dir`."""
    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir).absolute()
    report = progress or (lambda p: None)

    def tick(stage: str):
        def cb(done: int, total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise ExportCancelled("conversion cancelled")
            report(ExportProgress(stage, done, total))

        return cb

    tick("checking")(0, 1)
    cfg, _raw = load_config(source)
    side = read_side_files(source)
    _check_side_files(cfg, side)
    ckpt = Checkpoint(source, cfg)
    try:
        check_target(out_dir, options.overwrite)  # refuse early, before waiting on anything
        with locked_target(out_dir):
            clean_stale(out_dir.parent, own_target=out_dir)
            check_target(out_dir, options.overwrite)  # again under the lock: another export may have just finished
            check_free_space(out_dir.parent, free_space_needed(estimate_bytes(cfg, options)), "the converted model")
            tick("checking")(1, 1)
            files = _write(ckpt, cfg, side, options, source, source_info, out_dir, tick)
    except OSError as error:  # reading the checkpoint has its own messages: these are writes
        raise explain_write_error(error, out_dir) from None
    tick("finishing")(1, 1)
    sizes = {name: rec.size for name, rec in files.items()}
    return ExportResult(out_dir, time.perf_counter() - start, sizes)


def _write(
    ckpt: Checkpoint,
    cfg: ModelConfig,
    side,
    options: ExportOptions,
    source: Path,
    source_info: dict | None,
    out_dir: Path,
    tick,
) -> dict[str, FileRecord]:
    """Write every artifact into the hidden partial folder, then swap it in; on any failure remove it."""
    tmp = partial_dir(out_dir)
    tmp.mkdir()
    try:
        hashes: dict[str, str] = {}
        graphs = [("vision", _build_vision), ("decoder", _build_decoder)]
        if options.prefill:
            graphs.append(("decoder_prefill", _build_prefill_decoder))
        for name, build in graphs:
            # The text tensors are read once per decoder graph: keep them cached until the last.
            ckpt.forget_after_read = name != "decoder" or not options.prefill
            with ExternalDataWriter(tmp / f"{name}.onnx.data") as writer:
                g = GraphBuilder(name, writer)
                build(g, ckpt, cfg, options, tick(name))
                g.save(tmp / f"{name}.onnx", doc=f"Qwen3-VL {name}, exported by iris {EXPORTER_VERSION}")
            hashes[f"{name}.onnx.data"] = writer.sha256.hexdigest()
        tick("finishing")(0, 1)
        shutil.copy(side.tokenizer_json, tmp / "tokenizer.json")
        files = {}
        for path in sorted(tmp.iterdir()):
            digest = hashes.get(path.name) or sha256_file(path)
            files[path.name] = FileRecord(path.stat().st_size, digest)
        manifest = _manifest(cfg, side, options, source, source_info, files)
        manifest.write(tmp)
        # The digests were taken from the bytes as they were written: the first load need not
        # read 2.6 GB (6.5 GB with a prompt graph) back to check them.
        write_verified(tmp, files)
        replace_target(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _build_vision(g, ckpt, cfg: ModelConfig, options: ExportOptions, progress) -> None:
    build_vision(g, ckpt, cfg.vision, options.vision_format(), progress)


def _build_decoder(g, ckpt, cfg: ModelConfig, options: ExportOptions, progress) -> None:
    _decoder(g, ckpt, cfg, options, options.decoder_format(), progress)


def _build_prefill_decoder(g, ckpt, cfg: ModelConfig, options: ExportOptions, progress) -> None:
    """The same decoder with other layer weights, used for multi-token chunks (same KV cache)."""
    _decoder(g, ckpt, cfg, options, WeightFormat(options.prefill), progress)


def _decoder(g, ckpt, cfg: ModelConfig, options: ExportOptions, layers: WeightFormat, progress) -> None:
    build_decoder(
        g,
        ckpt,
        cfg.text,
        len(cfg.vision.deepstack_visual_indexes),
        layers,
        progress,
        embed_fmt=options.embedding_format(),
        kv_dtype=options.kv_cache_format(),
    )


def _manifest(
    cfg: ModelConfig,
    side,
    options: ExportOptions,
    source: Path,
    source_info: dict | None,
    files: dict[str, FileRecord],
) -> Manifest:
    t, v = cfg.text, cfg.vision
    return Manifest(
        source=SourceSection(**source_info) if source_info else SourceSection("folder", path=str(source.absolute())),
        precision=options.precision,
        weights=WeightsSection(
            vision=options.vision_format().kind, prefill=options.prefill, int8_weight_max=INT8_WEIGHT_MAX
        ),
        decoder=DecoderSection(
            file="decoder.onnx",
            num_layers=t.num_hidden_layers,
            kv_heads=t.num_key_value_heads,
            head_dim=t.head_dim,
            hidden_size=t.hidden_size,
            vocab_size=t.vocab_size,
            deepstack_levels=len(v.deepstack_visual_indexes),
            kv_dtype=options.kv_cache_format(),
            prefill_file="decoder_prefill.onnx" if options.prefill else None,
        ),
        vision=_vision_section(v),
        tokens=_token_ids(cfg, side),
        image_processor=_image_processor(cfg, side),
        chat_template=side.chat_template,
        generation=side.generation,
        context_limit=t.max_position_embeddings,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        files=files,
    )


def _check_side_files(cfg: ModelConfig, side) -> None:
    """Refuse, before converting, a checkpoint whose tokenizer or image processor the manifest could not describe."""
    _token_ids(cfg, side)
    _image_processor(cfg, side)


def _vision_section(v: VisionConfig) -> VisionSection:
    return VisionSection(
        file="vision.onnx",
        in_channels=v.in_channels,
        hidden_size=v.hidden_size,
        num_heads=v.num_heads,
        depth=v.depth,
        patch_size=v.patch_size,
        temporal_patch_size=v.temporal_patch_size,
        merge_size=v.spatial_merge_size,
        input_patch_dim=v.frame_patch_dim,
    )


def _token_ids(cfg: ModelConfig, side) -> TokenIds:
    """The image slot from config.json, the end of turn from the tokenizer, the ends of an
    answer from generation_config.json (else config.json)."""
    im_end = side.special_tokens.get(END_OF_TURN)
    if im_end is None:
        raise CheckpointError(f"The checkpoint's tokenizer has no {END_OF_TURN} token to end a chat turn.")
    eos = side.generation.get("eos_token_id", cfg.eos_token_id)
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return TokenIds(image=cfg.image_token_id, im_end=im_end, eos=tuple(eos))


def _image_processor(cfg: ModelConfig, side) -> ImageProcessorConfig:
    """The checkpoint's image processor, refused unless it cuts patches as the vision tower takes them."""
    config = ImageProcessorConfig.from_preprocessor_json(side.preprocessor)
    mismatch = image_geometry_mismatch(config, _vision_section(cfg.vision))
    if mismatch:
        raise CheckpointError(f"The checkpoint's {mismatch}.")
    return config
