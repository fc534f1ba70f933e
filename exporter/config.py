"""Qwen3-VL config.json parsing: the legacy Hub keys and the transformers-5 style both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("Qwen3VLForConditionalGeneration",)
VISION_MODEL_TYPES = ("qwen3_vl", "qwen3_vl_vision")
TEXT_MODEL_TYPES = ("qwen3_vl_text",)


@dataclass(frozen=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    in_channels: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    out_hidden_size: int
    num_position_embeddings: int
    deepstack_visual_indexes: tuple[int, ...]
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Width of one flattened patch row of pixel_values (C * T * P * P)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def frame_patch_dim(self) -> int:
        """Width of one patch of a single frame (C * P * P): what the vision graph takes."""
        return self.in_channels * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def grid_side(self) -> int:
        """Side of the square learned position-embedding table."""
        return int(round(self.num_position_embeddings**0.5))


@dataclass(frozen=True)
class TextConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int]
    max_position_embeddings: int
    tie_word_embeddings: bool
    hidden_act: str = "silu"
    attention_bias: bool = False


@dataclass(frozen=True)
class ModelConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    bos_token_id: int | None
    eos_token_id: int | list[int] | None


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise CheckpointError(f"config.json: '{where}' has no '{key}'")
    return d[key]


def _rope(text: dict) -> tuple[float, tuple[int, int, int]]:
    """rope_theta and mrope_section from either `rope_parameters` (v5) or `rope_scaling` (legacy)."""
    params = text.get("rope_parameters") or {}
    legacy = text.get("rope_scaling") or {}
    theta = params.get("rope_theta", text.get("rope_theta"))
    section = params.get("mrope_section", legacy.get("mrope_section"))
    rope_type = params.get("rope_type", legacy.get("rope_type", legacy.get("type", "default")))
    if theta is None:
        raise CheckpointError("config.json: text_config has no rope_theta (nor rope_parameters.rope_theta)")
    if section is None or len(section) != 3:
        raise CheckpointError("config.json: text_config has no 3-part mrope_section")
    if rope_type not in ("default", "mrope"):
        raise UnsupportedModelError(f"config.json: rope type '{rope_type}' is not supported")
    return float(theta), tuple(int(s) for s in section)


def _describe_model(model_type, archs: list) -> str:
    """What config.json says the model is: its model_type first, the class it names after."""
    kind = f"a '{model_type}' model" if model_type else "a model without a model_type"
    if archs:
        kind += f" (architecture {archs[0]})"
    return kind


def parse_config(raw: dict) -> ModelConfig:
    """Validate and normalise a Qwen3-VL config dict."""
    _check_supported(raw)
    text = _require(raw, "text_config", "top level")
    vision = _require(raw, "vision_config", "top level")
    if text.get("model_type", "qwen3_vl_text") not in TEXT_MODEL_TYPES:
        raise UnsupportedModelError(f"text model_type '{text.get('model_type')}' is not supported")
    if vision.get("model_type", "qwen3_vl") not in VISION_MODEL_TYPES:
        raise UnsupportedModelError(f"vision model_type '{vision.get('model_type')}' is not supported")
    tcfg, vcfg = _text_config(raw, text), _vision_config(vision)
    _check_together(tcfg, vcfg)
    return ModelConfig(
        text=tcfg,
        vision=vcfg,
        image_token_id=int(_require(raw, "image_token_id", "top level")),
        video_token_id=int(raw.get("video_token_id", 151656)),
        vision_start_token_id=int(_require(raw, "vision_start_token_id", "top level")),
        vision_end_token_id=int(_require(raw, "vision_end_token_id", "top level")),
        bos_token_id=text.get("bos_token_id", raw.get("bos_token_id")),
        eos_token_id=text.get("eos_token_id", raw.get("eos_token_id")),
    )


def _check_supported(raw: dict) -> None:
    archs = raw.get("architectures") or []
    model_type = raw.get("model_type")
    if model_type != "qwen3_vl" or (archs and archs[0] not in SUPPORTED_ARCHITECTURES):
        raise UnsupportedModelError(
            f"This checkpoint is {_describe_model(model_type, archs)}; Iris converts Qwen3-VL (dense) "
            f"checkpoints only (model_type 'qwen3_vl', {SUPPORTED_ARCHITECTURES[0]}), "
            "such as Qwen/Qwen3-VL-4B-Instruct"
        )


def _text_config(raw: dict, text: dict) -> TextConfig:
    theta, section = _rope(text)
    heads = int(_require(text, "num_attention_heads", "text_config"))
    hidden = int(_require(text, "hidden_size", "text_config"))
    head_dim = int(text.get("head_dim") or hidden // heads)
    if 2 * sum(section) != head_dim:
        raise CheckpointError(f"config.json: mrope_section {list(section)} does not cover head_dim {head_dim}")
    if text.get("hidden_act", "silu") != "silu" or text.get("attention_bias", False):
        raise UnsupportedModelError("only the silu MLP without attention bias is supported")
    return TextConfig(
        hidden_size=hidden,
        intermediate_size=int(_require(text, "intermediate_size", "text_config")),
        num_hidden_layers=int(_require(text, "num_hidden_layers", "text_config")),
        num_attention_heads=heads,
        num_key_value_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        vocab_size=int(_require(text, "vocab_size", "text_config")),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        mrope_section=section,
        max_position_embeddings=int(text.get("max_position_embeddings", 262144)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
    )


def _vision_config(vision: dict) -> VisionConfig:
    vparams = vision.get("rope_parameters") or {}
    vcfg = VisionConfig(
        depth=int(_require(vision, "depth", "vision_config")),
        hidden_size=int(_require(vision, "hidden_size", "vision_config")),
        intermediate_size=int(_require(vision, "intermediate_size", "vision_config")),
        num_heads=int(_require(vision, "num_heads", "vision_config")),
        in_channels=int(vision.get("in_channels", 3)),
        patch_size=int(_require(vision, "patch_size", "vision_config")),
        temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
        spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
        out_hidden_size=int(_require(vision, "out_hidden_size", "vision_config")),
        num_position_embeddings=int(_require(vision, "num_position_embeddings", "vision_config")),
        deepstack_visual_indexes=tuple(int(i) for i in vision.get("deepstack_visual_indexes", ())),
        hidden_act=vision.get("hidden_act", "gelu_pytorch_tanh"),
        rope_theta=float(vparams.get("rope_theta", 10000.0)),
    )
    if vcfg.grid_side**2 != vcfg.num_position_embeddings:
        raise CheckpointError("config.json: vision num_position_embeddings is not a square grid")
    if any(not 0 <= i < vcfg.depth for i in vcfg.deepstack_visual_indexes):
        raise CheckpointError("config.json: deepstack_visual_indexes point outside the vision blocks")
    return vcfg


def _check_together(tcfg: TextConfig, vcfg: VisionConfig) -> None:
    """What the two towers must agree on: the width of the visual tokens, and where DeepStack adds them."""
    if vcfg.out_hidden_size != tcfg.hidden_size:
        raise CheckpointError("config.json: vision out_hidden_size differs from the text hidden_size")
    if len(vcfg.deepstack_visual_indexes) > tcfg.num_hidden_layers:
        raise CheckpointError("config.json: more DeepStack levels than decoder layers")


def read_config_file(path: Path) -> tuple[ModelConfig, dict]:
    """Read and parse one config.json file; returns the parsed config and the raw dict."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent} has no {path.name}; is this a Hugging Face model folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name} in {path.parent} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path.name} in {path.parent} is not a JSON object")
    return parse_config(raw), raw


def load_config(folder: Path) -> tuple[ModelConfig, dict]:
    """The config.json of a checkpoint folder, parsed, and the raw dict."""
    return read_config_file(Path(folder) / "config.json")
