"""What a folder holds (an Iris model, a Hugging Face checkpoint, nothing, something else), Qt-free."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.artifacts import is_valid_artifact_dir, verify_artifacts
from engine.errors import ArtifactError
from engine.manifest import MANIFEST_NAME, Manifest


class FolderKind(Enum):
    ARTIFACTS = "an Iris model folder"
    CHECKPOINT = "a Hugging Face checkpoint"
    EMPTY = "empty"  # or not there yet: a good target
    DAMAGED = "a damaged Iris model folder"
    OTHER = "something else"


@dataclass(frozen=True)
class FolderInfo:
    kind: FolderKind
    path: Path  # for CHECKPOINT: the snapshot folder inside an HF cache repo folder, if that was chosen
    detail: str = ""  # why a folder is DAMAGED


def needs_setup(model_dir: Path) -> bool:
    """True unless `model_dir` holds a complete Iris model (cheap check: manifest and file sizes)."""
    return not is_valid_artifact_dir(Path(model_dir).expanduser())


def inspect_folder(folder: Path) -> FolderInfo:
    folder = Path(folder).expanduser()
    if not folder.exists():
        return FolderInfo(FolderKind.EMPTY, folder)
    if not folder.is_dir():
        return FolderInfo(FolderKind.OTHER, folder)
    if (folder / MANIFEST_NAME).exists():
        problem = _artifact_problem(folder)
        return FolderInfo(FolderKind.DAMAGED, folder, problem) if problem else FolderInfo(FolderKind.ARTIFACTS, folder)
    checkpoint = _find_checkpoint(folder)
    if checkpoint is not None:
        return FolderInfo(FolderKind.CHECKPOINT, checkpoint)
    if not any(folder.iterdir()):
        return FolderInfo(FolderKind.EMPTY, folder)
    return FolderInfo(FolderKind.OTHER, folder)


def manifest_summary(folder: Path) -> Manifest | None:
    """The manifest of an artifact folder, or None if it cannot be read (only used for display)."""
    try:
        return Manifest.load(folder)
    except ArtifactError:
        return None


def _artifact_problem(folder: Path) -> str:
    """Empty if `folder` is a usable artifact folder (quick check: manifest and sizes), else what is wrong."""
    try:
        verify_artifacts(folder, full_hash=False)
    except ArtifactError as error:
        return str(error)
    return ""


def _looks_like_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _find_checkpoint(folder: Path) -> Path | None:
    """The folder itself, or the newest snapshot when the user picked an HF cache repo folder."""
    if _looks_like_checkpoint(folder):
        return folder
    snapshots = [s for s in (folder / "snapshots").glob("*") if s.is_dir() and _looks_like_checkpoint(s)]
    if not snapshots:
        return None
    return max(snapshots, key=lambda s: s.stat().st_mtime)
