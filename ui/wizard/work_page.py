"""Base of the download, convert and verify pages: run one Task, show its state, Cancel and Retry.

A page is complete once its job succeeded; then the wizard moves on by itself (except from the last
page, which waits for Finish). Leaving the page (Back, closing the wizard) stops the job and waits
for its thread, so no thread outlives the wizard.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget, QWizardPage

from engine.errors import EngineError
from exporter.errors import ExportCancelled, ExportError

from .task import Cancelled, Job, Task

ERROR_STYLE = "color: #b3261e;"


class WorkPage(QWizardPage):
    cancel_text = "Cancel"
    resume_text = "Start again"  # label of the retry button after a cancel
    retry_text = "Retry"  # ... and after a failure

    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self._task: Task | None = None
        self._succeeded = False

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.cancel_button = QPushButton(self.cancel_text)
        self.retry_button = QPushButton(self.retry_text)
        self.cancel_button.clicked.connect(self.cancel_work)
        self.retry_button.clicked.connect(self.start_work)

        self.content = QVBoxLayout()  # subclasses put their progress widgets here
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.retry_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.content)
        layout.addSpacing(8)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self._show_buttons(running=False, failed=False)

    # ---- what subclasses provide -------------------------------------------------------------
    def make_job(self) -> Job:
        raise NotImplementedError

    def reset_view(self) -> None:
        """Put the progress widgets back to 'not started'."""

    def show_progress(self, value: Any) -> None:
        pass

    def show_success(self, result: Any) -> None:
        pass

    def show_failure(self, error: BaseException) -> None:
        """Mark in the progress widgets where it stopped (the message and buttons are done here)."""

    def cancelled_message(self) -> str:
        return "Cancelled."

    # ---- QWizardPage -------------------------------------------------------------------------
    @property
    def task(self) -> Task | None:
        """The work running now, if any."""
        return self._task

    def initializePage(self) -> None:
        self.start_work()

    def cleanupPage(self) -> None:  # the user went Back: stop, do not leave a thread running
        self.stop_work()

    def isComplete(self) -> bool:
        return self._succeeded

    # ---- running ------------------------------------------------------------------------------
    @Slot()
    def start_work(self) -> None:
        self.stop_work()
        self._set_succeeded(False)
        self.reset_view()
        self._set_status("")
        task = Task(self.make_job(), self)
        task.progressed.connect(self._on_progress)
        task.succeeded.connect(self._on_succeeded)
        task.failed.connect(self._on_failed)
        self._task = task
        self._show_buttons(running=True, failed=False)
        task.start()

    @Slot()
    def cancel_work(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.cancel_button.setEnabled(False)
            self._set_status("Stopping…")

    def stop_work(self) -> None:
        """Cancel the job and wait for its thread; safe to call at any time."""
        task, self._task = self._task, None
        if task is not None:
            # Stop first, disconnect after: disconnecting while the job thread may be inside an
            # emit can deadlock (it holds Qt's signal lock and waits for the GIL this thread holds).
            # Results already queued are ignored by the slots, since `task` is no longer self._task.
            task.stop()
            for signal in (task.progressed, task.succeeded, task.failed):
                signal.disconnect()
            self._show_buttons(running=False, failed=False)

    # ---- results, on the GUI thread -----------------------------------------------------------
    @Slot(object, object)
    def _on_progress(self, task: Task, value: Any) -> None:
        if task is self._task:
            self.show_progress(value)

    @Slot(object, object)
    def _on_succeeded(self, task: Task, result: Any) -> None:
        if task is not self._task:
            return
        self._finish_task()
        self._show_buttons(running=False, failed=False)
        self.show_success(result)
        self._set_succeeded(True)
        wizard = self.wizard()
        if wizard is not None and wizard.currentPage() is self and self.nextId() != -1:
            wizard.next()

    @Slot(object, object)
    def _on_failed(self, task: Task, error: BaseException) -> None:
        if task is not self._task:
            return
        self._finish_task()
        self.show_failure(error)
        cancelled = isinstance(error, (ExportCancelled, Cancelled)) or self._cancel_requested
        self.retry_button.setText(self.resume_text if cancelled else self.retry_text)
        self._show_buttons(running=False, failed=True)
        self._set_status(self.cancelled_message() if cancelled else self.describe_error(error), error=not cancelled)

    def describe_error(self, error: BaseException) -> str:
        """Our own errors carry readable messages; anything else is a bug, shown with its type."""
        if isinstance(error, (ExportError, EngineError)):
            return str(error)
        return f"Something unexpected went wrong: {type(error).__name__}: {error}"

    # ---- helpers ------------------------------------------------------------------------------
    @property
    def _cancel_requested(self) -> bool:
        return self._task is not None and self._task.cancel_event.is_set()

    def _finish_task(self) -> None:
        if self._task is not None:
            self._task.wait()  # the signal came from run()'s last line: this returns at once

    def _set_succeeded(self, value: bool) -> None:
        if value != self._succeeded:
            self._succeeded = value
            self.completeChanged.emit()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(ERROR_STYLE if error else "")

    def _show_buttons(self, running: bool, failed: bool) -> None:
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(running)
        self.retry_button.setVisible(failed)
