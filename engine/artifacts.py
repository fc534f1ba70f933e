"""Opening an artifact folder: the manifest, and a check that every file is whole.

Sizes are checked at every load (instant). File contents are hashed the first time a folder is
loaded and whenever a file's size or modification time changes since the last successful check;
the record of that check lives in `.verified.json` beside the files.
"""
from __future__ import annotations

import json
from pathlib import Path

from exporter.manifest import (MANIFEST_FORMAT, MANIFEST_NAME, VERIFIED_NAME,  # the format's one definition
                               sha256_file, stat_key, write_verified)

from .errors import ArtifactError

SUPPORTED_MANIFEST_VERSION = 1
_REDO = "Run the model setup again (it re-downloads only what is missing and converts again)."


def read_manifest(model_dir: Path) -> dict:
    folder = Path(model_dir)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ArtifactError(f"The model folder {folder} does not exist. {_REDO}")
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a converted Iris model (no {MANIFEST_NAME}); "
                            f"the conversion may not have finished. {_REDO}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"The model's {MANIFEST_NAME} is damaged ({exc}). {_REDO}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path} is not an Iris model manifest. {_REDO}")
    version = manifest.get("manifest_version")
    if version != SUPPORTED_MANIFEST_VERSION:
        raise ArtifactError(f"The model in {folder} was converted by an incompatible version of Iris "
                            f"(manifest version {version}, this app reads {SUPPORTED_MANIFEST_VERSION}). "
                            f"Convert it again with this version.")
    return manifest


def verify_artifacts(model_dir: Path, full_hash: bool | None = None) -> dict:
    """The manifest of a complete, undamaged folder; ArtifactError says what is wrong.

    full_hash: True always hashes, False never does, None (default) hashes what changed since the
    last successful check.
    """
    folder = Path(model_dir)
    manifest = read_manifest(folder)
    files = manifest.get("files") or {}
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"The model folder {folder} is incomplete: {name} is missing. {_REDO}")
        size = path.stat().st_size
        if size != record["size"]:
            raise ArtifactError(f"The model file {name} has {size:,} bytes instead of {record['size']:,}: "
                                f"it is damaged or was not written completely. {_REDO}")
    if full_hash is False:
        return manifest
    stamp_path = folder / VERIFIED_NAME
    try:
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        stamp = {}
    for name, record in files.items():
        if full_hash or stamp.get(name) != stat_key(folder / name):
            if sha256_file(folder / name) != record["sha256"]:
                raise ArtifactError(f"The model file {name} is damaged (its checksum does not match). {_REDO}")
    write_verified(folder, files)
    return manifest


def is_valid_artifact_dir(model_dir: Path) -> bool:
    """Quick check (manifest and sizes) for deciding whether the setup wizard must run."""
    try:
        verify_artifacts(model_dir, full_hash=False)
        return True
    except ArtifactError:
        return False
