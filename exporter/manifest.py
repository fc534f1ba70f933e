"""The artifact folder's manifest: everything the engine needs at run time, and file integrity.

The engine trusts nothing else in the folder: special token ids, image processor parameters, the
chat template, generation defaults, graph shapes, and each file's size and sha256 all come from here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-artifacts"
MANIFEST_VERSION = 1
# Which files' contents were last found equal to the manifest, keyed by [size, mtime_ns]; a file
# whose key changed is hashed again before use.
VERIFIED_NAME = ".verified.json"


@dataclass
class FileRecord:
    size: int
    sha256: str


@dataclass
class Manifest:
    exporter_version: str
    source: dict
    precision: str
    weights: dict
    model: dict
    decoder: dict
    vision: dict
    tokens: dict
    image_processor: dict
    chat_template: str
    generation: dict
    context_limit: int
    created: str
    export_seconds: float = 0.0
    files: dict[str, FileRecord] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST_NAME).write_text(self.to_json(), encoding="utf-8")


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def stat_key(path: Path) -> list[int]:
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def write_verified(folder: Path, names) -> None:
    """Record that these files match the manifest as they are now (size and modification time)."""
    folder = Path(folder)
    try:
        (folder / VERIFIED_NAME).write_text(json.dumps({name: stat_key(folder / name) for name in names}))
    except OSError:
        pass  # a read-only folder is fine: its files are simply hashed again next time
