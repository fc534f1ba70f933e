"""The main window: saved chats | images | conversation, menus, engine status and settings.

All model work goes through the EngineController (one worker thread) and the chat's bookkeeping
lives in ChatSession; the window lays the parts out and reacts to signals, so it stays
responsive while images are encoded and answers stream in. Each pending image shows what it
costs and how long this computer takes to read it, from the engine's measured speeds.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu, QSplitter, QVBoxLayout, QWidget

from ui import settings as app_settings
from ui.chat_store import HistoryStore
from ui.chat_view import ChatView
from ui.chats_panel import ChatsPanel
from ui.composer import Composer
from ui.controller import EngineController
from ui.image_opener import ImageOpener
from ui.image_pane import ImagePane
from ui.session import STAGE_TEXT, ChatSession
from ui.settings_dialog import SettingsDialog
from ui.status_line import StatusLine
from ui.worker import LOADING, EngineInfo, EngineSetup

MEASURING = "Measuring this computer's speed"


def model_title(info: EngineInfo) -> str:
    """'qwen3-vl-4b-instruct · int4': the folder name and the precision from its manifest."""
    precision = info.manifest.precision
    return f"{info.model_dir.name} · {precision}" if precision else info.model_dir.name


def read_ahead_status(result) -> str:
    """What the status bar says once the pending images are read (result: ReadAhead or None)."""
    if result is None or result.cancelled or not result.images:
        return "Ready"
    what = "the image is" if result.images == 1 else "the images are"
    return f"Ready · {what} read: the answer starts as soon as you send"


class MainWindow(QMainWindow):
    modelLoaded = Signal()

    def __init__(
        self,
        controller: EngineController,
        store: HistoryStore,
        settings_store,
        attachments_dir,
        model_dir: Path,
        speed_file: Path | None = None,
    ):
        super().__init__()
        self.setWindowTitle("Iris")
        self.resize(1180, 760)
        self.setAcceptDrops(True)
        self.controller = controller
        self.store = store
        self.settings_store = settings_store
        self.settings = app_settings.load_settings(settings_store)
        self.model_dir = Path(model_dir)
        self.speed_file = speed_file  # None: the data folder's
        self.info: EngineInfo | None = None

        # One thread opens every image (the pane's files, the conversation's thumbnails): one big
        # decode at a time on a shared CPU, and one thing to stop at close.
        self.image_opener = ImageOpener(self)
        self.image_pane = ImagePane(attachments_dir, self.image_opener)
        self.chat = ChatView(self.image_opener)
        self.composer = Composer()
        self.chats = ChatsPanel()
        self.banner = QLabel()
        self.banner.setObjectName("errorBanner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.session = ChatSession(
            controller,
            store,
            self.chat,
            self.image_pane,
            self.composer,
            self.chats,
            lambda: self.settings.sampling(),
            lambda: self.settings.image_detail,
            self,
        )
        self.answerFinished = self.session.answerFinished
        self._build_layout()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        self.composer.set_can_send(False)
        self.composer.setFocus()
        self.load_model()

    # -- layout ---------------------------------------------------------------------------------

    def _build_layout(self) -> None:
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.chat, 1)
        right_layout.addWidget(self.composer)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        for widget in (self.chats, self.image_pane, right):
            splitter.addWidget(widget)
        splitter.setStretchFactor(1, 2)
        splitter.setStretchFactor(2, 3)
        splitter.setSizes([200, 400, 580])
        splitter.setChildrenCollapsible(False)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.addWidget(splitter)
        self.setCentralWidget(central)

    def _build_menus(self) -> None:
        def action(menu: QMenu, text: str, slot, shortcut=None) -> QAction:
            act = menu.addAction(text)
            act.triggered.connect(slot)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            return act

        file_menu = self.menuBar().addMenu("&File")
        action(file_menu, "&New chat", self.session.new_chat, QKeySequence.StandardKey.New)
        action(file_menu, "&Open image…", self.image_pane.open_dialog, QKeySequence.StandardKey.Open)
        action(file_menu, "&Paste image", self.image_pane.paste_from_clipboard, "Ctrl+Shift+V")
        action(file_menu, "&Export chat to Markdown…", self.session.export_chat, "Ctrl+E")
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        chat_menu = self.menuBar().addMenu("&Chat")
        action(chat_menu, "&Stop answer", self.session.stop, "Esc")
        action(chat_menu, "&Regenerate answer", self.session.regenerate, "Ctrl+R")
        settings_menu = self.menuBar().addMenu("&Settings")
        action(settings_menu, "&Preferences…", self.open_settings, QKeySequence.StandardKey.Preferences)
        action(settings_menu, "Set up or change the &model…", self.run_setup_wizard)
        self.show_history_action = action(settings_menu, "Show saved &chats", self._toggle_history)
        self.show_history_action.setCheckable(True)
        self.show_history_action.setChecked(True)

    def _build_status_bar(self) -> None:
        self.status_line = StatusLine()
        self.model_label = QLabel()
        self.serve_label = QLabel()  # "Serving at URL" while the local server runs
        self.serve_label.setObjectName("serveStatus")
        self.serve_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.serve_label.setVisible(False)
        self.measure_label = QLabel(MEASURING + "…")  # quiet: the app works as usual meanwhile
        self.measure_label.setObjectName("measureStatus")
        self.measure_label.setToolTip(
            "A few seconds, once: so that waits can be predicted. Anything you do comes first."
        )
        self.measure_label.setVisible(False)
        self.statusBar().addWidget(self.status_line, 1)
        self.statusBar().addPermanentWidget(self.measure_label)
        self.statusBar().addPermanentWidget(self.serve_label)
        self.statusBar().addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        self.controller.loaded.connect(self._on_loaded)
        self.controller.loadFailed.connect(self._on_load_failed)
        self.controller.servingChanged.connect(self._on_serving_changed)
        self.controller.measuring.connect(self.measure_label.setVisible)
        self.controller.measuring.connect(lambda active: active or self._refresh_image_costs())
        self.session.status.connect(self._set_status)
        self.session.progress.connect(self.status_line.show_progress)
        self.session.error.connect(self.show_error)
        self.session.notice.connect(self.show_notice)
        self.session.noticeCleared.connect(self._hide_notice)
        self.session.statsMeasured.connect(self._refresh_image_costs)  # the speeds were refined
        read_ahead = self.session.read_ahead
        read_ahead.progress.connect(self._show_read_ahead)
        read_ahead.ended.connect(self._read_ahead_ended)
        read_ahead.error.connect(self._read_ahead_failed)
        self.composer.sendRequested.connect(lambda _text: self.banner.hide())
        self.composer.imagePasted.connect(self.image_pane.add_mime)
        self.image_pane.errorOccurred.connect(self.show_error)
        self.image_pane.imagesChanged.connect(self.banner.hide)
        self.image_pane.imagesChanged.connect(lambda: self.chat.set_has_images(bool(self.image_pane.images())))

    # -- drag and drop anywhere in the window ---------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        self.image_pane.handle_drag(event)

    def dragMoveEvent(self, event) -> None:
        self.image_pane.handle_drag(event)

    def dropEvent(self, event) -> None:
        self.image_pane.handle_drag(event)

    # -- model --------------------------------------------------------------------------------

    def load_model(self) -> None:
        self.info = None
        self.session.read_ahead.set_ready(False)
        self.image_pane.set_cost_function(None)
        self.composer.set_can_send(False)
        self._set_status(STAGE_TEXT[LOADING], busy=True)
        self.controller.set_serving(*self.settings.serve_fields())  # starts once the model is loaded
        self.controller.load(EngineSetup(self.model_dir, self.settings.threads or None, self.speed_file))

    def _on_loaded(self, info: EngineInfo) -> None:
        self.info = info
        self.session.model_name = model_title(info)
        self._show_image_costs()
        self.session.read_ahead.set_ready(True)  # pending images are read while the question is typed
        self.composer.set_can_send(True)
        self.model_label.setText(self.session.model_name)
        self.model_label.setToolTip(str(info.model_dir))
        self._set_status("Ready", busy=False)
        if info.warnings:
            self.show_error("\n".join(info.warnings))  # stays until read: results would be off
        self.modelLoaded.emit()

    def _on_load_failed(self, message: str) -> None:
        self.session.model_name = ""
        self._set_status("The model could not be loaded", busy=False)
        self.model_label.setText("no model")
        self.show_error(f"{message}\nChoose another model folder in Settings › Preferences.")
        self.answerFinished.emit("", message)

    # -- settings -------------------------------------------------------------------------------

    def open_settings(self) -> None:
        current = self.image_pane.current()
        from ui.paths import default_model_dir

        dialog = SettingsDialog(
            self.settings,
            (current.width, current.height) if current else None,
            self._estimate_function(),
            default_model_dir(),
            self,
        )
        if dialog.exec():
            self.apply_settings(dialog.settings())

    def apply_settings(self, new: app_settings.AppSettings) -> None:
        old, self.settings = self.settings, new
        app_settings.save_settings(new, self.settings_store)
        if new.engine_fields() != old.engine_fields():
            self.model_dir = app_settings.resolve_model_dir(new)
            self.session.when_idle(self._reload_model)
        elif new.image_detail != old.image_detail and self.info is not None:
            self._show_image_costs()  # the next question sends its images at the new detail
        if new.serve_fields() != old.serve_fields():
            self.controller.set_serving(*new.serve_fields())

    def _on_serving_changed(self, url: str, error: str) -> None:
        self.serve_label.setText(f"Serving at {url}" if url else "")
        self.serve_label.setVisible(bool(url))
        if error:
            self.show_error(error)

    def _estimate_function(self):
        """(width, height, detail) -> ReadEstimate(tokens, seconds or None) from the engine's
        measured speeds, after what the conversation holds (reading slows as it grows); None
        while no model is loaded."""
        info, session = self.info, self.session
        if info is None:
            return None
        return lambda w, h, detail: info.estimate_image(w, h, image_detail=detail, context=session.context_used)

    def _show_image_costs(self) -> None:
        estimate, detail = self._estimate_function(), self.settings.image_detail
        self.image_pane.set_cost_function(lambda w, h: estimate(w, h, detail))

    def _refresh_image_costs(self, *_args) -> None:
        """This computer's speeds were measured or refined: predict the pending images again."""
        self.image_pane.refresh_costs()

    def _show_read_ahead(self, text: str, progress) -> None:
        if self.session.holding:  # "Opening the image…" until the held question goes: the end of
            return  # this read does not touch the status, so a progress shown now would stay
        if progress is None:
            self.status_line.show_state(text, busy=True)
        else:
            self.status_line.show_progress(text, progress)

    def _read_ahead_ended(self, result) -> None:
        self._refresh_image_costs()
        self.image_pane.mark_read(result.images if result is not None else 0)
        if not (self.session.busy or self.session.holding) and self.info is not None:  # else the question's status
            self._set_status(read_ahead_status(result), busy=False)

    def _read_ahead_failed(self, message: str) -> None:
        if not self.session.busy:  # else the question sent meanwhile reads the images itself, and says
            self.show_error(message)  # what goes wrong then

    def _reload_model(self) -> None:
        self.session.new_chat()
        self.banner.hide()
        self.load_model()

    def run_setup_wizard(self) -> None:
        """The first-run wizard again (download/convert another model); imported only when used."""
        from dataclasses import replace

        from ui.wizard import SetupWizard

        wizard = SetupWizard(app_settings.resolve_model_dir(self.settings), self)
        wizard.modelReady.connect(lambda folder: self.apply_settings(replace(self.settings, model_dir=str(folder))))
        wizard.exec()

    # -- small helpers ----------------------------------------------------------------------------

    def show_error(self, message: str) -> None:
        self._show_banner(message, "error")

    def show_notice(self, message: str) -> None:
        self._show_banner(message, "info")

    def _hide_notice(self) -> None:
        if self.banner.property("kind") == "info":  # an error stays until the user acts on it
            self.banner.hide()

    def _show_banner(self, message: str, kind: str) -> None:
        self.banner.setText(message)
        self.banner.setProperty("kind", kind)
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        self.banner.show()

    def _set_status(self, text: str, busy: bool) -> None:
        self.status_line.show_state(text, busy)

    def _toggle_history(self, checked: bool) -> None:
        self.chats.setVisible(checked)

    def closeEvent(self, event) -> None:
        """Cancel, quit, wait (a load in progress cannot be interrupted, so hide first), then keep
        whatever part of the answer had arrived. A question still waiting for its images is not
        sent: it goes back to the box, like any text not sent yet."""
        self.session.give_back_held_question()
        self._set_status("Closing", busy=True)
        self.hide()
        self.image_opener.close()  # no image arrives after this
        self.controller.shutdown()
        self.session.save_partial()
        event.accept()
