"""The artifact folder's format: manifest.json, typed, written by the exporter and read by the
engine, the setup wizard and the tests through this one module.

The engine trusts nothing else in the folder: special token ids, image processor parameters, the
chat template, generation defaults, graph shapes, and each file's size and sha256 all come from
here. `Manifest.write` and `Manifest.load` are the only ways in and out, so a field added on
one side is known to the other (as a checkpoint's config class serves both saving and loading).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import ArtifactError
from .image import ImageProcessorConfig

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-artifacts"
MANIFEST_VERSION = 3  # 3: time-major KV cache, chunk rows as outputs (attention.py); 2: typed sections
REDO_SETUP = "Run the model setup again (it re-downloads only what is missing and converts again)."
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightsSection:
    """How the weights the engine cares about are stored (kinds of exporter/graph/ops.WeightFormat)."""

    vision: str  # "int8" | "int8-block" | "fp32"
    prefill: str | None  # the optional prompt graph's layers: "int8" | "fp32"
    int8_weight_max: int  # int8 weights above 63 saturate the int8 kernel of x86 CPUs without VNNI/AMX

    def uses_int8(self) -> bool:
        return self.vision == "int8" or self.prefill == "int8"


@dataclass(frozen=True)
class DecoderSection:
    """The decoder graph(s) and the shapes their KV cache is allocated with."""

    file: str
    num_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int  # rows of the logits: the tokenizer's ids must fit
    deepstack_levels: int
    kv_dtype: str  # "fp32" | "fp16": what the graphs declare for the cache
    prefill_file: str | None  # the optional int8 prompt graph


@dataclass(frozen=True)
class VisionSection:
    """The vision graph and the vision tower's config it was built from."""

    file: str
    in_channels: int
    hidden_size: int
    num_heads: int
    depth: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    input_patch_dim: int  # values per patch the graph takes (one frame when the patch weights are folded)


@dataclass(frozen=True)
class TokenIds:
    """The special tokens the engine acts on, as the checkpoint numbers them."""

    image: int  # the chat template's image slot, expanded to an image's tokens
    im_end: int  # the chat template's end of turn
    eos: tuple[int, ...]  # tokens that end an answer


@dataclass(frozen=True)
class SourceSection:
    """Where the checkpoint came from: a folder, or a Hub repository at a commit."""

    kind: str  # "folder" | "hub"
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None


@dataclass
class Manifest:
    source: SourceSection
    precision: str  # the decoder's weights: "int4" | "fp32"
    weights: WeightsSection
    decoder: DecoderSection
    vision: VisionSection
    tokens: TokenIds
    image_processor: ImageProcessorConfig  # the checkpoint's preprocessor_config.json
    chat_template: str
    generation: dict  # the checkpoint's generation_config.json (see SamplingOptions.from_generation_config)
    context_limit: int
    created: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    manifest_version: int = MANIFEST_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST_NAME).write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """The manifest of an artifact folder; ArtifactError says, for a user, what is wrong."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ArtifactError(f"The model folder {folder} does not exist. {REDO_SETUP}")
        if not path.is_file():
            raise ArtifactError(
                f"{folder} is not a converted Iris model (no {MANIFEST_NAME}); "
                f"the conversion may not have finished. {REDO_SETUP}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"The model's {MANIFEST_NAME} is damaged ({exc}). {REDO_SETUP}") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{path} is not an Iris model manifest. {REDO_SETUP}")
        version = data.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise ArtifactError(
                f"The model in {folder} was converted by an incompatible version of Iris "
                f"(manifest version {version}, this app reads {MANIFEST_VERSION}). "
                f"Convert it again with this version."
            )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Every field typed and present (ArtifactError names the first that is not), and the
        image processor's patch geometry the same as the vision graph's."""
        manifest = _section(cls, data, "", {"files": _files})
        mismatch = image_geometry_mismatch(manifest.image_processor, manifest.vision)
        if mismatch:
            raise ArtifactError(f"The model's {mismatch}. Convert the model again.")
        return manifest

    def graph_files(self, folder: Path) -> set[str]:
        """Every file the engine reads: each graph, its weight file if it has one, the tokenizer."""
        needed = {"tokenizer.json"}
        for graph in (self.vision.file, self.decoder.file, self.decoder.prefill_file):
            if graph:
                needed.add(graph)
                if (Path(folder) / f"{graph}.data").exists():
                    needed.add(f"{graph}.data")
        return needed


def image_geometry_mismatch(processor: ImageProcessorConfig, vision: VisionSection) -> str | None:
    """None if the image processor cuts patches the way the vision graph was built to take
    them, else how they differ."""
    for name in ("patch_size", "temporal_patch_size", "merge_size"):
        cuts, takes = getattr(processor, name), getattr(vision, name)
        if cuts != takes:
            return f"image processor has {name} {cuts} but the vision tower has {takes}"
    return None


def _lacks(name: str) -> ArtifactError:
    return ArtifactError(f"The model's manifest lacks {name}; convert the model again.")


_SECTIONS = {
    "SourceSection": SourceSection,
    "WeightsSection": WeightsSection,
    "DecoderSection": DecoderSection,
    "VisionSection": VisionSection,
    "TokenIds": TokenIds,
    "ImageProcessorConfig": ImageProcessorConfig,
}


def _section(cls, data, name: str, special: dict | None = None):
    """`cls` from its JSON object: every field must be there, of its declared type."""
    if not isinstance(data, dict):
        raise _lacks(name)
    values = {}
    for f in fields(cls):
        path = f"{name}.{f.name}" if name else f.name
        if special and f.name in special:
            values[f.name] = special[f.name](data.get(f.name))
        elif f.name not in data:
            raise _lacks(path)
        else:
            values[f.name] = _value(f.type, data[f.name], path)
    return cls(**values)


def _value(kind: str, value, path: str):
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if value is None and optional:
        return None
    if kind in _SECTIONS:
        return _section(_SECTIONS[kind], value, path)
    if kind == "int" and type(value) is int:
        return value
    if kind == "float" and type(value) in (int, float):
        return float(value)
    if kind in ("str", "dict") and isinstance(value, {"str": str, "dict": dict}[kind]):
        return value
    if kind.startswith("tuple[") and isinstance(value, list):
        item = "int" if kind.startswith("tuple[int") else "float"
        items = tuple(_value(item, v, path) for v in value)
        if kind.endswith("...]") or len(items) == kind.count(",") + 1:
            return items
    raise _lacks(f"{path} as {_DESCRIBED.get(kind, kind)}")


_DESCRIBED = {"int": "a whole number", "float": "a number", "str": "text", "dict": "an object"}


def _files(data) -> dict[str, FileRecord]:
    """The file records, refused as damaged unless each is a size and a sha256."""
    damaged = f"The model's {MANIFEST_NAME} is damaged"
    if not isinstance(data, dict) or not data:
        raise ArtifactError(f"{damaged}: it lists no files to check. {REDO_SETUP}")
    for name, record in data.items():
        if not (
            isinstance(record, dict)
            and type(record.get("size")) is int
            and record["size"] >= 0
            and isinstance(record.get("sha256"), str)
            and _SHA256.fullmatch(record["sha256"])
        ):
            raise ArtifactError(f"{damaged}: its record of {name} is not a size and a sha256. {REDO_SETUP}")
    return {name: FileRecord(record["size"], record["sha256"]) for name, record in data.items()}
