"""Application set-up: names (which decide the data folder and settings file), icon, theme."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from ui import paths
from ui.chat_store import HistoryStore
from ui.controller import EngineController
from ui.gc_guard import install_gc_guard
from ui.main_window import MainWindow
from ui.pyside_guard import install_pyside_guard
from ui.settings import open_qsettings

COLOR_SCHEMES = ("system", "light", "dark")  # "system" follows the desktop
log = logging.getLogger(__name__)


def resources_dir() -> Path:
    """resources/ beside the ui package, or inside a PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base / "resources"


def set_application_names() -> None:
    QCoreApplication.setOrganizationName("Iris")
    QCoreApplication.setApplicationName("Iris")


def create_application(argv: list[str], color_scheme: str = "system") -> QApplication:
    if install_pyside_guard():  # before the first signal is emitted
        log.warning("This PySide6 loses references to True/None on each call; Iris keeps them alive.")
    set_application_names()
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationDisplayName("Iris")
    app.setDesktopFileName("iris")
    install_gc_guard()  # before any worker thread starts
    app.setWindowIcon(QIcon(str(resources_dir() / "iris.svg")))
    apply_color_scheme(app, color_scheme)
    style = resources_dir() / "style.qss"
    if style.exists():
        app.setStyleSheet(style.read_text("utf-8"))
    return app


def apply_color_scheme(app: QApplication, scheme: str) -> None:
    """Follow the desktop unless asked; force Fusion's palette when the platform cannot switch."""
    if scheme == "system":
        return
    wanted = Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light
    app.setStyle("Fusion")
    app.styleHints().setColorScheme(wanted)
    if app.styleHints().colorScheme() != wanted:
        app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())


def dark_palette() -> QPalette:
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#1f2126",
        QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#26292f",
        QPalette.ColorRole.AlternateBase: "#30343c",
        QPalette.ColorRole.Text: "#e6e6e6",
        QPalette.ColorRole.Button: "#2c2f36",
        QPalette.ColorRole.ButtonText: "#e6e6e6",
        QPalette.ColorRole.Highlight: "#3a7bd5",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: "#30343c",
        QPalette.ColorRole.ToolTipText: "#e6e6e6",
        QPalette.ColorRole.PlaceholderText: "#9aa0a6",
        QPalette.ColorRole.Link: "#7fb3ff",
        QPalette.ColorRole.Mid: "#4a4e57",
        QPalette.ColorRole.Midlight: "#3a3e46",
        QPalette.ColorRole.Light: "#50545e",
        QPalette.ColorRole.Dark: "#15171b",
    }
    for role, color in roles.items():
        palette.setColor(role, QColor(color))
    disabled = QPalette.ColorGroup.Disabled
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(disabled, role, QColor("#6f747c"))
    palette.setColor(disabled, QPalette.ColorRole.Base, QColor("#22252a"))
    return palette


def build_main_window(
    model_dir: Path,
    engine_factory: Callable | None = None,
    settings_store=None,
    history_root: Path | None = None,
    attachments_dir: Callable[[], Path] | None = None,
    speed_file: Path | None = None,
) -> MainWindow:
    """The window with its engine thread; tests pass their own folders, settings and speeds
    files (`speed_file` None: this computer's measured speeds in the data folder)."""
    app = QApplication.instance()
    if app is not None:
        install_gc_guard()  # once per process; also when a test made the application
    controller = EngineController(engine_factory)
    if app is not None:
        app.aboutToQuit.connect(controller.shutdown)  # never leave the thread running at exit
    store = HistoryStore(history_root if history_root is not None else paths.conversations_dir())
    window = MainWindow(
        controller,
        store,
        settings_store if settings_store is not None else open_qsettings(),
        attachments_dir or paths.attachments_dir,
        model_dir,
        speed_file,
    )
    controller.setParent(window)
    return window
