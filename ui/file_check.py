""" "Check the model files": hash every file of a model folder on a thread of its own.

Hashing 2.6 GB (6.5 GB with the prompt graph) takes seconds to minutes, so it must not run on the
GUI thread. The engine does the check (`engine.artifacts.check_model_files`); this only carries
its progress and verdict back as signals, and stops it within one 8 MB block when asked.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from engine.artifacts import check_model_files
from engine.errors import EngineError


class FileCheck(QThread):
    progressed = Signal(str)  # "Checking decoder.onnx.data (3 of 7)…"
    verdict = Signal(bool, str)  # intact, what to tell the user; not sent when stopped

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)
        self._stop = threading.Event()

    def run(self) -> None:
        def progress(name: str, index: int, count: int) -> None:
            self.progressed.emit(f"Checking {name} ({index + 1} of {count})…")

        try:
            count = check_model_files(self.folder, progress, self._stop.is_set)
        except EngineError as error:
            self.verdict.emit(False, str(error))
        except OSError as error:
            self.verdict.emit(False, f"Could not read the model files in {self.folder}: {error.strerror or error}")
        else:
            if count is not None:
                self.verdict.emit(True, f"All {count} files are intact.")

    def stop(self) -> None:
        """Stop hashing and wait for the thread to end (a QThread must not die while it runs)."""
        self._stop.set()
        self.wait()
