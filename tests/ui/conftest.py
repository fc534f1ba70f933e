"""UI fixtures: a private settings file and data folder per test, images made on the fly, and
the real main window running the real engine on the tiny exported checkpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from PySide6.QtCore import QMimeData, QPointF, QSettings, QStandardPaths, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

import ui.image_opener
from ui.app import set_application_names
from ui.pyside_guard import install_pyside_guard


@pytest.fixture(scope="session", autouse=True)
def _qt_names_and_test_paths():
    """Never touch the real user's data folder or settings from a test; the PySide6 guard as the
    app installs it when it creates its application."""
    install_pyside_guard()
    set_application_names()
    QStandardPaths.setTestModeEnabled(True)
    yield
    QStandardPaths.setTestModeEnabled(False)


@pytest.fixture(scope="package", autouse=True)
def _gc_back_on_after_the_ui_tests():
    """build_main_window switches automatic garbage collection to the GUI thread's timer
    (ui/gc_guard.py); later test folders without an event loop get the normal collector back."""
    yield
    from ui.gc_guard import uninstall_gc_guard

    uninstall_gc_guard()


@pytest.fixture
def settings_file(tmp_path) -> Path:
    """An INI file standing in for the user's settings; QSettings' default user path points here too."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    return tmp_path / "iris-settings.ini"


@pytest.fixture
def settings_store(settings_file) -> QSettings:
    return QSettings(str(settings_file), QSettings.Format.IniFormat)


@pytest.fixture
def make_image(tmp_path):
    """make_image(name, width, height) -> path of a PNG with a filled square in its top-left quarter."""

    def make(name: str = "photo.png", width: int = 640, height: int = 480) -> Path:
        image = Image.new("RGB", (width, height), (240, 240, 240))
        ImageDraw.Draw(image).rectangle((0, 0, width // 4, height // 4), fill=(30, 90, 200))
        path = tmp_path / name
        image.save(path)
        return path

    return make


@pytest.fixture
def open_window(qtbot, tmp_path, settings_file):
    """open_window(model_dir, wait_loaded=True, **settings) -> a shown MainWindow on a real engine.

    Keyword arguments are AppSettings fields written to the settings file first. qtbot closes
    each window at teardown, which runs the real shutdown (cancel, quit, wait)."""
    from dataclasses import replace

    from ui.app import build_main_window
    from ui.settings import load_settings, save_settings
    from ui.worker import default_engine_factory

    def open_(model_dir: Path, wait_loaded: bool = True, **settings):
        if settings:
            store = QSettings(str(settings_file), QSettings.Format.IniFormat)
            save_settings(replace(load_settings(store), **settings), store)
        engines = []  # every engine the window builds, through its public factory seam
        window = build_main_window(
            model_dir,
            engine_factory=lambda setup: engines.append(default_engine_factory(setup)) or engines[-1],
            settings_store=QSettings(str(settings_file), QSettings.Format.IniFormat),
            history_root=tmp_path / "history",
            attachments_dir=lambda: _ensure(tmp_path / "attachments"),
            speed_file=tmp_path / "speeds.json",  # each test measures this computer afresh
        )
        window.test_engines = engines
        qtbot.addWidget(window)
        if wait_loaded:
            with qtbot.waitSignal(window.modelLoaded, timeout=60_000):
                window.show()
        else:
            window.show()
        return window

    return open_


class HeldLoader:
    """Stands in for the engine's loader the opener calls: notes the thread of each call and
    holds every call until released (never longer than a few seconds, so a test cannot hang)."""

    def __init__(self, monkeypatch):
        self.real = ui.image_opener.load_image
        self.release = threading.Event()
        self.threads: list[int] = []
        self.names: list[str] = []
        self.started = threading.Event()
        self.returned = threading.Event()
        monkeypatch.setattr(ui.image_opener, "load_image", self)

    def __call__(self, path, *args, **kwargs):
        self.threads.append(threading.get_ident())
        self.names.append(path.name)
        self.started.set()
        self.release.wait(5)
        try:
            return self.real(path, *args, **kwargs)
        finally:
            self.returned.set()


@pytest.fixture
def held_loader(monkeypatch) -> HeldLoader:
    """The image pane's loader, held until `held_loader.release` is set."""
    return HeldLoader(monkeypatch)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def drop_files(widget, paths: list[Path]) -> bool:
    """Simulated drag-and-drop (platform-notes section 4); True if the drag was accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    center = widget.rect().center()
    pos = QPointF(center)
    enter = QDragEnterEvent(
        center, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return True


def add_images(qtbot, pane, paths: list[Path], sent: bool = False) -> None:
    """Add files to an image pane and wait until each one is accepted or refused (they are
    opened on the pane's own thread)."""
    pane.add_files(paths, sent)
    qtbot.waitUntil(lambda: not pane.opening(include_sent=sent), timeout=10_000)


def ask(qtbot, window, text: str) -> None:
    """Type a question into the composer and press Return, as a user does."""
    qtbot.keyClicks(window.composer.edit, text)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)


def ask_and_wait(qtbot, window, text: str, timeout: int = 60_000) -> tuple[str, str]:
    """Ask and wait for the answer; returns (answer text, error)."""
    with qtbot.waitSignal(window.answerFinished, timeout=timeout) as done:
        ask(qtbot, window, text)
    return tuple(done.args)


def engine_turns(window):
    """The turns the engine's current conversation holds (what the model remembers)."""
    conversation = window.test_engines[-1].active_conversation
    return conversation.turns if conversation is not None else []
