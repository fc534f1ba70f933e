"""Where Iris keeps its files: the per-user data folder, never next to the code.

The application and organization names must be set on the QCoreApplication first (ui.app does),
because QStandardPaths derives the folder from them ("~/.local/share/Iris/Iris" on Linux,
"%APPDATA%/Iris/Iris" on Windows, "~/Library/Application Support/Iris/Iris" on macOS).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths

DEFAULT_MODEL_NAME = "qwen3-vl-4b-instruct"


def data_dir() -> Path:
    """The per-user data folder, created on first use."""
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    if not location:
        raise RuntimeError("This system reports no writable per-user data folder for Iris.")
    path = Path(location)
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Parent folder of exported model artifacts."""
    return data_dir() / "models"


def default_model_dir() -> Path:
    """Where the first-run wizard puts the model unless the user picks another folder."""
    return models_dir() / DEFAULT_MODEL_NAME


def conversations_dir() -> Path:
    """One sub-folder per saved conversation (JSON + copies of its images)."""
    path = data_dir() / "conversations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def attachments_dir() -> Path:
    """Pasted images are written here so every attachment is a file the engine and history share."""
    path = data_dir() / "attachments"
    path.mkdir(parents=True, exist_ok=True)
    return path
