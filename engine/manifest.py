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
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .errors import ArtifactError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-artifacts"
MANIFEST_VERSION = 1
_REDO = "Run the model setup again (it re-downloads only what is missing and converts again)."
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class DecoderSection:
    """The decoder graph(s) and the shapes their KV cache is allocated with."""

    file: str
    num_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    deepstack_levels: int
    kv_dtype: str = "fp32"
    prefill_file: str | None = None  # the optional int8 prompt graph
    prefill_weights: str | None = None


@dataclass(frozen=True)
class VisionSection:
    file: str
    patch_dim: int
    input_patch_dim: int
    merge_size: int
    patch_size: int
    temporal_patch_size: int


@dataclass(frozen=True)
class TokenIds:
    """The special tokens the engine acts on, as the checkpoint numbers them."""

    image: int
    im_start: int
    im_end: int  # the chat template's end of turn
    eos: tuple[int, ...]
    video: int | None = None
    vision_start: int | None = None
    vision_end: int | None = None
    pad: int | None = None


@dataclass
class Manifest:
    exporter_version: str
    source: dict
    precision: str
    weights: dict  # how each group of weights is stored (see exporter/graph/ops.WeightFormat)
    model: dict  # the checkpoint's text and vision config, as the exporter read it
    decoder: DecoderSection
    vision: VisionSection
    tokens: TokenIds
    image_processor: dict  # preprocessor_config.json
    chat_template: str
    generation: dict  # generation_config.json
    context_limit: int
    created: str
    export_seconds: float = 0.0
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
            raise ArtifactError(f"The model folder {folder} does not exist. {_REDO}")
        if not path.is_file():
            raise ArtifactError(
                f"{folder} is not a converted Iris model (no {MANIFEST_NAME}); "
                f"the conversion may not have finished. {_REDO}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"The model's {MANIFEST_NAME} is damaged ({exc}). {_REDO}") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{path} is not an Iris model manifest. {_REDO}")
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
        sections = {"decoder": DecoderSection, "vision": VisionSection, "tokens": TokenIds}
        values = {}
        for f in fields(cls):
            if f.name == "files":  # never optional: a file it does not list could not be checked
                values["files"] = _files(data.get("files"))
                continue
            if f.name not in data:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue  # optional, with a default
                raise _lacks(f.name)
            value = data[f.name]
            if f.name in sections:
                value = _section(sections[f.name], value, f.name)
            values[f.name] = value
        return cls(**values)

    def graph_files(self, folder: Path) -> set[str]:
        """Every file the engine reads: each graph, its weight file if it has one, the tokenizer."""
        needed = {"tokenizer.json"}
        for graph in (self.vision.file, self.decoder.file, self.decoder.prefill_file):
            if graph:
                needed.add(graph)
                if (Path(folder) / f"{graph}.data").exists():
                    needed.add(f"{graph}.data")
        return needed


def _lacks(name: str) -> ArtifactError:
    return ArtifactError(f"The model's manifest lacks {name}; convert the model again.")


def _section(cls, data, name: str):
    if not isinstance(data, dict):
        raise _lacks(name)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING:
                raise _lacks(f"{name}.{f.name}")
            continue
        value = data[f.name]
        if f.name == "eos":
            value = tuple(int(v) for v in (value if isinstance(value, list) else [value]))
        elif value is not None and f.type in ("int", "int | None"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _lacks(f"{name}.{f.name} as a whole number")
        values[f.name] = value
    return cls(**values)


def _files(data) -> dict[str, FileRecord]:
    """The file records, refused as damaged unless each is a size and a sha256."""
    damaged = f"The model's {MANIFEST_NAME} is damaged"
    if not isinstance(data, dict) or not data:
        raise ArtifactError(f"{damaged}: it lists no files to check. {_REDO}")
    for name, record in data.items():
        if not (
            isinstance(record, dict)
            and type(record.get("size")) is int
            and record["size"] >= 0
            and isinstance(record.get("sha256"), str)
            and _SHA256.fullmatch(record["sha256"])
        ):
            raise ArtifactError(f"{damaged}: its record of {name} is not a size and a sha256. {_REDO}")
    return {name: FileRecord(record["size"], record["sha256"]) for name, record in data.items()}
