"""The first-run wizard: choose -> download -> convert -> verify, emitting modelReady(Path) on Finish.

The app can open it again from its menu. Closing it at any point (Cancel, Escape, the window's close
button) cancels the running job and waits for its thread before the dialog goes away.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget, QWizard

from .choice import DEFAULT_REPO_ID, Mode, PageId, SetupChoice
from .choose_page import ChoosePage
from .convert_page import ConvertPage
from .download_page import DownloadPage
from .verify_page import VerifyPage


class SetupWizard(QWizard):
    modelReady = Signal(Path)  # the finished artifact folder

    def __init__(self, model_dir: Path, parent: QWidget | None = None, *, repo_id: str = DEFAULT_REPO_ID) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up Iris")
        self.setWizardStyle(QWizard.ModernStyle)
        self.setOption(QWizard.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.NoBackButtonOnLastPage, True)
        self.setMinimumSize(680, 520)
        self.choice = SetupChoice(Mode.DOWNLOAD, Path(model_dir), repo_id=repo_id)
        self.choose_page = ChoosePage(Path(model_dir), repo_id)
        self.download_page = DownloadPage()
        self.convert_page = ConvertPage()
        self.verify_page = VerifyPage()
        for page_id, page in (
            (PageId.CHOOSE, self.choose_page),
            (PageId.DOWNLOAD, self.download_page),
            (PageId.CONVERT, self.convert_page),
            (PageId.VERIFY, self.verify_page),
        ):
            self.setPage(int(page_id), page)
        self.setStartId(int(PageId.CHOOSE))
        self.currentIdChanged.connect(self._page_changed)
        self._previous_id = -1

    def _page_changed(self, page_id: int) -> None:
        if page_id == PageId.CHOOSE and self._previous_id == PageId.DOWNLOAD:
            self.choose_page.revisit()
        self._previous_id = page_id

    def accept(self) -> None:
        if not self.verify_page.isComplete():  # Finish is only enabled then; this guards programmatic calls
            return
        self._stop_all()
        self.modelReady.emit(self.choice.model_dir)
        super().accept()

    def done(self, result: int) -> None:
        self._stop_all()
        super().done(result)

    def _stop_all(self) -> None:
        self.choose_page.stop_work()
        for page in (self.download_page, self.convert_page, self.verify_page):
            page.stop_work()
