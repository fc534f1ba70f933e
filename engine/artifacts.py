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
from collections.abc import Callable
from pathlib import Path

from .errors import ArtifactError
from .file_stamps import VERIFIED_NAME, file_stamp, sha256_file, write_verified
from .manifest import MANIFEST_NAME, REDO_SETUP, FileRecord, Manifest


def listed_files(manifest: Manifest, folder: Path) -> dict[str, FileRecord]:
    """The manifest's file records, refused as damaged unless they cover every file the engine
    reads (a file it does not list could not be checked)."""
    unlisted = sorted(manifest.graph_files(folder) - manifest.files.keys())
    if unlisted:
        raise ArtifactError(
            f"The model's {MANIFEST_NAME} is damaged: it does not list {', '.join(unlisted)}, "
            f"so they cannot be checked. {REDO_SETUP}"
        )
    return manifest.files


def _check_sizes(folder: Path, files: dict[str, FileRecord]) -> None:
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"The model folder {folder} is incomplete: {name} is missing. {REDO_SETUP}")
        size = path.stat().st_size
        if size != record.size:
            raise ArtifactError(
                f"The model file {name} has {size:,} bytes instead of {record.size:,}: "
                f"it is damaged or was not written completely. {REDO_SETUP}"
            )


def _damaged(folder: Path, name: str) -> ArtifactError:
    """The error for a file whose contents differ from the manifest. The record of earlier checks
    goes too: the damage may have left the file's stamp as it was, and no later load may trust it."""
    try:
        (folder / VERIFIED_NAME).unlink(missing_ok=True)
    except OSError:
        pass
    return ArtifactError(f"The model file {name} is damaged (its checksum does not match). {REDO_SETUP}")


def _read_verified(folder: Path) -> dict:
    try:
        stamps = json.loads((folder / VERIFIED_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def verify_artifacts(model_dir: Path, full_hash: bool | None = None) -> Manifest:
    """The manifest of a complete, undamaged folder; ArtifactError says what is wrong.

    full_hash: True always hashes, False never does (manifest and sizes only), None (default)
    hashes the files whose stamp changed since the last successful check.
    """
    folder = Path(model_dir)
    manifest = Manifest.load(folder)
    files = listed_files(manifest, folder)
    _check_sizes(folder, files)
    if full_hash is False:
        return manifest
    recorded = _read_verified(folder)
    stamps = {}
    for name, record in files.items():
        stamps[name] = file_stamp(folder / name)
        if full_hash or recorded.get(name) != stamps[name]:
            if sha256_file(folder / name) != record.sha256:
                raise _damaged(folder, name)
    if recorded != stamps:
        write_verified(folder, files, stamps)
    return manifest


def check_model_files(
    model_dir: Path,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int | None:
    """Hash every file of the folder against its manifest, whatever the stamps say (the user's
    "Check the model files"). Returns how many files are intact, or None if `should_stop()` said
    so; ArtifactError names the first damaged file and what to do. `progress(name, index, count)`
    is called before each file."""
    folder = Path(model_dir)
    files = listed_files(Manifest.load(folder), folder)
    _check_sizes(folder, files)
    stamps = {}
    for index, (name, record) in enumerate(files.items()):
        if progress is not None:
            progress(name, index, len(files))
        stamps[name] = file_stamp(folder / name)
        digest = sha256_file(folder / name, should_stop=should_stop)
        if digest is None:
            return None
        if digest != record.sha256:
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
