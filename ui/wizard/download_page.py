"""Page 2: fetch the checkpoint from the Hub into the HF cache, with bytes, speed, ETA, Cancel and Resume.

Resuming needs nothing from this page: exporter.download keeps partial files and continues them with
a Range request, also after the app was closed, and reuses whatever the HF cache already holds.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QLabel, QProgressBar, QWidget

from exporter.download import DownloadProgress, download_checkpoint

from .task import Job
from .units import human_bytes, human_duration, human_speed
from .work_page import WorkPage

BAR_STEPS = 1000  # QProgressBar holds an int: show permille, not bytes (8 GB overflows int32)


class DownloadPage(WorkPage):
    cancel_text = "Cancel download"
    resume_text = "Resume"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Downloading the model",
            "Only the files Iris needs are fetched. You can cancel at any time and resume later, "
            "even after closing Iris: nothing downloaded is lost.",
            parent,
        )
        self.file_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, BAR_STEPS)
        self.detail_label = QLabel()
        self.cache_label = QLabel()
        self.cache_label.setWordWrap(True)
        for widget in (self.file_label, self.progress_bar, self.detail_label, self.cache_label):
            self.content.addWidget(widget)
        self._last: DownloadProgress | None = None

    @property
    def last_progress(self) -> DownloadProgress | None:
        """What the download reported last (None before it reports)."""
        return self._last

    def initializePage(self) -> None:
        self._last = None
        choice = self.wizard().choice
        self.setTitle(f"Downloading {choice.repo_id}")
        plan = choice.plan
        if plan is not None:
            self.cache_label.setText(
                f"Saved in the Hugging Face cache ({plan.cache_dir}), where other tools can reuse it."
            )
        super().initializePage()

    def make_job(self) -> Job:
        choice = self.wizard().choice
        repo_id, revision = choice.repo_id, choice.revision

        def job(report, cancel) -> Path:
            return download_checkpoint(repo_id, revision, progress=report, cancel=cancel)

        return job

    def reset_view(self) -> None:
        """Show what is on disk already: from the last run on this page, else from the choose page's plan."""
        plan = self.wizard().choice.plan
        done, total = (
            (self._last.bytes_done, self._last.bytes_total)
            if self._last
            else ((plan.present_bytes, plan.total_bytes) if plan else (0, 0))
        )
        self.file_label.setText("")
        self._show_bytes(done, total)
        if done:
            self.detail_label.setText(f"Resuming: {human_bytes(done)} of {human_bytes(total)} already here.")
        else:
            self.detail_label.setText("Connecting to the Hugging Face Hub…")

    def show_progress(self, progress: DownloadProgress) -> None:
        self._last = progress
        self.file_label.setText(progress.current_file)
        self._show_bytes(progress.bytes_done, progress.bytes_total)
        parts = [f"{human_bytes(progress.bytes_done)} of {human_bytes(progress.bytes_total)}"]
        if progress.speed > 0:
            parts.append(human_speed(progress.speed))
        if progress.eta is not None and progress.bytes_done < progress.bytes_total:
            parts.append(f"about {human_duration(progress.eta)} left")
        self.detail_label.setText("  ·  ".join(parts))

    def show_success(self, snapshot: Path) -> None:
        choice = self.wizard().choice
        choice.source_dir = Path(snapshot)
        choice.source_info = {
            "kind": "hub",
            "repo_id": choice.repo_id,
            "revision": choice.revision,
            "commit": Path(snapshot).name,
        }
        self.file_label.setText("")
        self.progress_bar.setValue(BAR_STEPS)
        self._set_status("Download complete.")

    def show_failure(self, error: BaseException) -> None:
        if self._last is not None:  # a speed and an ETA would claim it is still running
            self.detail_label.setText(f"{human_bytes(self._last.bytes_done)} of {human_bytes(self._last.bytes_total)}")

    def cancelled_message(self) -> str:
        return (
            "Download paused. What was downloaded is kept: Resume continues where it stopped, "
            "also after Iris was closed."
        )

    def _show_bytes(self, done: int, total: int) -> None:
        self.progress_bar.setValue(round(BAR_STEPS * done / total) if total else 0)
