"""Page 4: check the artifact folder, load it, and generate one token; Finish hands the folder to the app.

An Iris model folder the user brought gets every file hashed (it may be a damaged copy); one this
wizard has just written is hashed once too, which records the check so the app's loads stay quick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from engine.artifacts import verify_artifacts
from engine.engine import Engine
from engine.manifest import Manifest

from .choice import Mode
from .task import Cancelled, Job
from .units import human_bytes
from .work_page import WorkPage

STEPS = (
    ("files", "Checking the files"),
    ("load", "Loading the model"),
    ("smoke", "Test run (one token)"),
)
MARKS = {"waiting": "○", "running": "…", "done": "✓", "failed": "✗"}


@dataclass(frozen=True)
class VerifyResult:
    model_dir: Path
    manifest: Manifest
    seconds: float


def verify_model(model_dir: Path, full_hash: bool | None, report, cancel) -> VerifyResult:
    """The job: every step announces itself first, so a failure points at the step that failed."""

    def step(name: str) -> None:
        if cancel.is_set():
            raise Cancelled(name)
        report(name)

    start = time.perf_counter()
    step("files")
    manifest = verify_artifacts(model_dir, full_hash=full_hash)
    step("load")
    engine = Engine(model_dir)
    step("smoke")
    engine.smoke_test()
    del engine  # free the sessions on this thread, the one that made them
    return VerifyResult(model_dir, manifest, time.perf_counter() - start)


class VerifyPage(WorkPage):
    cancel_text = "Cancel check"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Checking the model",
            "Iris checks every file, loads the model and lets it write one word.",
            parent,
        )
        self.setFinalPage(True)
        grid = QGridLayout()
        self.step_marks: dict[str, QLabel] = {}
        for row, (step, label) in enumerate(STEPS):
            mark = QLabel()
            mark.setFixedWidth(24)
            grid.addWidget(mark, row, 0)
            grid.addWidget(QLabel(label), row, 1)
            self.step_marks[step] = mark
        grid.setColumnStretch(1, 1)
        self.content.addLayout(grid)
        self._current: str | None = None

    def nextId(self) -> int:
        return -1

    def make_job(self) -> Job:
        choice = self.wizard().choice
        model_dir = choice.model_dir
        full_hash = True if choice.mode is Mode.VERIFY else None  # None: what changed since the last check

        def job(report, cancel) -> VerifyResult:
            return verify_model(model_dir, full_hash, report, cancel)

        return job

    def reset_view(self) -> None:
        self._current = None
        for step in self.step_marks:
            self._mark(step, "waiting")

    def show_progress(self, step: str) -> None:
        if self._current is not None:
            self._mark(self._current, "done")
        self._current = step
        self._mark(step, "running")

    def show_success(self, result: VerifyResult) -> None:
        for step in self.step_marks:
            self._mark(step, "done")
        size = sum(record.size for record in result.manifest.files.values())
        precision = result.manifest.precision
        self._set_status(
            f"Iris is ready: {precision} model, {human_bytes(size)}, in {result.model_dir}. "
            "Press Finish to start chatting."
        )

    def show_failure(self, error: BaseException) -> None:
        if self._current is not None:
            self._mark(self._current, "failed")

    def cancelled_message(self) -> str:
        return "Check cancelled."

    def _mark(self, step: str, state: str) -> None:
        self.step_marks[step].setText(MARKS[state])
