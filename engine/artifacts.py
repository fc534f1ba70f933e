"""Opening an artifact folder: the manifest, and a check that every file is whole.

The manifest must list every file the engine reads (the graphs, their weight files and the
tokenizer) with its size and sha256; a manifest that does not is refused as damaged, since it
would leave those files unchecked. Sizes are checked at every load (instant). A file's contents
are hashed the first time a folder is loaded and whenever its stamp changed since the last
successful check; the stamps live in `.verified.json` beside the files.

What a load trusts without hashing: a stamp is the file's size, modification time, change time
and inode, plus the hash of 16 small blocks spread over it (about 1 MB read per file, a few
milliseconds even for the 2 GB weights). Any write through the file system moves the change time,
which cannot be set back the way the modification time can, and a copied or replaced file is a
new inode; so only damage that bypasses the file system (a failing disk) outside the sampled blocks
goes unseen, and `check_model_files` (Settings › Check the model files) hashes everything on demand.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from exporter.manifest import (MANIFEST_FORMAT, MANIFEST_NAME, VERIFIED_NAME,  # the format's one definition
                               file_stamp, sha256_file, write_verified)

from .errors import ArtifactError

SUPPORTED_MANIFEST_VERSION = 1
_REDO = "Run the model setup again (it re-downloads only what is missing and converts again)."
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def listed_files(manifest: dict, folder: Path) -> dict[str, dict]:
    """The manifest's file records, refused as damaged unless they cover every file the engine
    reads: each graph it names, that graph's weight file if there is one, and the tokenizer."""
    files = manifest.get("files")
    damaged = f"The model's {MANIFEST_NAME} is damaged"
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{damaged}: it lists no files to check. {_REDO}")
    for name, record in files.items():
        if not (isinstance(record, dict) and type(record.get("size")) is int and record["size"] >= 0
                and isinstance(record.get("sha256"), str) and _SHA256.fullmatch(record["sha256"])):
            raise ArtifactError(f"{damaged}: its record of {name} is not a size and a sha256. {_REDO}")
    needed = {"tokenizer.json"}
    for section, key in (("vision", "file"), ("decoder", "file"), ("decoder", "prefill_file")):
        part = manifest.get(section)
        graph = part.get(key) if isinstance(part, dict) else None
        if graph:
            needed.add(str(graph))
            if (folder / f"{graph}.data").exists():
                needed.add(f"{graph}.data")
    unlisted = sorted(needed - files.keys())
    if unlisted:
        raise ArtifactError(f"{damaged}: it does not list {', '.join(unlisted)}, so they cannot be "
                            f"checked. {_REDO}")
    return files


def _check_sizes(folder: Path, files: dict[str, dict]) -> None:
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"The model folder {folder} is incomplete: {name} is missing. {_REDO}")
        size = path.stat().st_size
        if size != record["size"]:
            raise ArtifactError(f"The model file {name} has {size:,} bytes instead of {record['size']:,}: "
                                f"it is damaged or was not written completely. {_REDO}")


def _damaged(folder: Path, name: str) -> ArtifactError:
    """The error for a file whose contents differ from the manifest. The record of earlier checks
    goes too: the damage may have left the file's stamp as it was, and no later load may trust it."""
    try:
        (folder / VERIFIED_NAME).unlink(missing_ok=True)
    except OSError:
        pass
    return ArtifactError(f"The model file {name} is damaged (its checksum does not match). {_REDO}")


def _read_verified(folder: Path) -> dict:
    try:
        stamps = json.loads((folder / VERIFIED_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def verify_artifacts(model_dir: Path, full_hash: bool | None = None) -> dict:
    """The manifest of a complete, undamaged folder; ArtifactError says what is wrong.

    full_hash: True always hashes, False never does (manifest and sizes only), None (default)
    hashes the files whose stamp changed since the last successful check.
    """
    folder = Path(model_dir)
    manifest = read_manifest(folder)
    files = listed_files(manifest, folder)
    _check_sizes(folder, files)
    if full_hash is False:
        return manifest
    recorded = _read_verified(folder)
    stamps = {}
    for name, record in files.items():
        stamps[name] = file_stamp(folder / name)
        if full_hash or recorded.get(name) != stamps[name]:
            if sha256_file(folder / name) != record["sha256"]:
                raise _damaged(folder, name)
    if recorded != stamps:
        write_verified(folder, files, stamps)
    return manifest


def check_model_files(model_dir: Path, progress: Callable[[str, int, int], None] | None = None,
                      should_stop: Callable[[], bool] = lambda: False) -> int | None:
    """Hash every file of the folder against its manifest, whatever the stamps say (the user's
    "Check the model files"). Returns how many files are intact, or None if `should_stop()` said
    so; ArtifactError names the first damaged file and what to do. `progress(name, index, count)`
    is called before each file."""
    folder = Path(model_dir)
    files = listed_files(read_manifest(folder), folder)
    _check_sizes(folder, files)
    stamps = {}
    for index, (name, record) in enumerate(files.items()):
        if progress is not None:
            progress(name, index, len(files))
        stamps[name] = file_stamp(folder / name)
        digest = sha256_file(folder / name, should_stop=should_stop)
        if digest is None:
            return None
        if digest != record["sha256"]:
            raise _damaged(folder, name)
    write_verified(folder, files, stamps)
    return len(files)


def is_valid_artifact_dir(model_dir: Path) -> bool:
    """Quick check (manifest and sizes) for deciding whether the setup wizard must run."""
    try:
        verify_artifacts(model_dir, full_hash=False)
        return True
    except ArtifactError:
        return False
