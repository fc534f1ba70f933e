"""Tests of the first-run wizard, driven through its buttons against a real local HTTP 'Hub'.

Shared helpers live here (the brief gives this folder no conftest): each test module defines its
small fixtures with them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QAbstractButton, QWizard

from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

REPO = "iris-test/tiny-qwen3vl"
WEIGHTS = "model.safetensors"
WAIT_MS = 30_000  # generous upper bounds: on 2 busy cores a download + conversion can take seconds


@contextlib.contextmanager
def serve(folder: Path, monkeypatch, hf_home: Path):
    """A FakeHub serving `folder` as REPO, with huggingface_hub pointed at it and short retry waits."""
    from exporter import download

    with FakeHub(folder, REPO) as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, hf_home)
        monkeypatch.setattr(download, "RETRY_DELAYS_S", (0.05, 0.05))
        yield hub


_open_wizards: list = []


def make_wizard(qtbot, model_dir: Path):
    from ui.wizard import SetupWizard

    wizard = SetupWizard(model_dir)
    _open_wizards.append(wizard)  # qtbot only holds a weak reference; see close_wizards
    wizard.show()
    qtbot.waitExposed(wizard)
    qtbot.waitUntil(lambda: not wizard.choose_page.measuring, timeout=WAIT_MS)  # the kernel measurement
    return wizard


def close_wizards() -> None:
    """Close every wizard a test opened, as a user would: this must cancel and join its threads."""
    from ui.wizard.task import _running

    while _open_wizards:
        _open_wizards.pop().close()
    assert not [t for t in _running if t.isRunning()], "a wizard left a thread running after close()"


def click(qtbot, button: QAbstractButton) -> None:
    """Click where a user would: radio buttons react only on their circle and text, at the left."""
    assert button.isVisible() and button.isEnabled(), f"'{button.text()}' cannot be clicked"
    rect = button.rect()
    pos = QPoint(min(10, rect.width() // 2), rect.height() // 2)
    qtbot.mouseClick(button, Qt.LeftButton, pos=pos)


def type_into(qtbot, edit, text: str) -> None:
    edit.clear()
    qtbot.keyClicks(edit, text)


def next_button(wizard) -> QAbstractButton:
    return wizard.button(QWizard.NextButton)


def finish_button(wizard) -> QAbstractButton:
    return wizard.button(QWizard.FinishButton)


def wait_next_enabled(qtbot, wizard, timeout: int = WAIT_MS) -> None:
    qtbot.waitUntil(lambda: next_button(wizard).isEnabled(), timeout=timeout)


def wait_page(qtbot, wizard, page_id: int, timeout: int = WAIT_MS) -> None:
    qtbot.waitUntil(lambda: wizard.currentId() == int(page_id), timeout=timeout)


def choose_download(qtbot, wizard, repo: str = REPO) -> None:
    """Type the repo id and wait until the page has asked the Hub and allows Next."""
    type_into(qtbot, wizard.choose_page.repo_edit, repo)
    wait_next_enabled(qtbot, wizard)


def choose_folder(qtbot, wizard, folder: Path) -> None:
    click(qtbot, wizard.choose_page.folder_radio)
    type_into(qtbot, wizard.choose_page.folder_edit, str(folder))


def wait_failed(qtbot, page, timeout: int = WAIT_MS) -> None:
    """Until a work page shows its Retry / Resume / Start again button."""
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=timeout)


def partial_files(hf_home: Path) -> list[Path]:
    return list(hf_home.rglob("*.incomplete"))
