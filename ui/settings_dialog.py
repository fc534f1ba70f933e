"""The Settings dialog: image detail (what each choice costs for the current image, and how long
this computer takes to read it), sampling,
threads, the model folder, a full check of the model's files and the local server. It edits an
AppSettings value; the window stores and applies it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.cpu import cpu_info
from engine.image import DETAIL_PRESETS, ImageProcessorConfig, tokens_for
from ui.file_check import FileCheck
from ui.settings import IMAGE_DETAILS, AppSettings
from ui.waits import about

# (width, height, detail) -> the engine's ReadEstimate: .tokens, and .seconds on this computer
# (None until its speed is measured)
CostFunction = Callable[[int, int, str], object]


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: AppSettings,
        current_image: tuple[int, int] | None = None,
        cost: CostFunction | None = None,
        default_model_dir: Path | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(520)
        self._current_image = current_image
        self._cost = cost
        self._default_model_dir = default_model_dir
        self._check: FileCheck | None = None
        note = QLabel(
            "Changing threads or the model folder reloads the model and starts a new chat. "
            "Image detail applies to the images of your next question."
        )
        note.setWordWrap(True)
        note.setObjectName("settingsNote")
        layout = QVBoxLayout(self)
        for widget in (
            self._build_image_box(),
            self._build_answer_box(),
            self._build_model_box(),
            self._build_serve_box(),
            note,
            self._build_buttons(),
        ):
            layout.addWidget(widget)
        self.set_settings(settings)

    def _build_image_box(self) -> QGroupBox:
        """The image detail, with what it costs for the current image."""
        self.detail = QComboBox()
        for name in IMAGE_DETAILS:
            self.detail.addItem(f"{name.capitalize()} (up to {detail_limit(name, self._cost)} tokens per image)", name)
        self.detail_info = QLabel()
        self.detail_info.setWordWrap(True)
        self.detail_info.setObjectName("detailInfo")
        self.detail.currentIndexChanged.connect(self._update_detail_info)
        box = QGroupBox("Images")
        form = QFormLayout(box)
        form.addRow("Image detail:", self.detail)
        form.addRow("", self.detail_info)
        return box

    def _build_answer_box(self) -> QGroupBox:
        """Sampling and the answer's length."""
        self.temperature = _double(0.05, 2.0, 0.05, 2)
        self.top_p = _double(0.05, 1.0, 0.05, 2)
        self.top_k = QSpinBox(minimum=0, maximum=1000)
        self.top_k.setSpecialValueText("off")
        self.presence_penalty = _double(0.0, 2.0, 0.1, 2)
        self.max_new_tokens = QSpinBox(minimum=16, maximum=16384, singleStep=128)
        box = QGroupBox("Answers")
        form = QFormLayout(box)
        form.addRow("Temperature:", self.temperature)
        form.addRow("Top-p:", self.top_p)
        form.addRow("Top-k:", self.top_k)
        form.addRow("Presence penalty:", self.presence_penalty)
        form.addRow("Max new tokens:", self.max_new_tokens)
        return box

    def _build_model_box(self) -> QGroupBox:
        """The processor, threads, the model folder and a full check of its files."""
        self.threads = QSpinBox(minimum=0, maximum=max(os.cpu_count() or 1, 1))
        self.threads.setSpecialValueText(f"automatic ({cpu_info().physical_cores})")
        # What the kernels run on: speed (and whether the faster first answer pays) depends on it.
        self.processor = QLabel(cpu_info().summary())
        self.processor.setObjectName("processor")
        self.processor.setWordWrap(True)
        self.processor.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_dir = QLineEdit()
        self.model_dir.setPlaceholderText(str(self._default_model_dir or ""))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_dir, 1)
        model_row.addWidget(browse)
        self.check_button = QPushButton("Check the model files")
        self.check_button.setToolTip(
            "Read every file of the model folder and compare it with the checksums written when it was converted."
        )
        self.check_button.clicked.connect(self.check_model_files)
        self.check_result = QLabel()
        self.check_result.setObjectName("fileCheckResult")
        self.check_result.setWordWrap(True)
        self.check_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button)
        check_row.addStretch(1)
        box = QGroupBox("Model")
        form = QFormLayout(box)
        form.addRow("Processor:", self.processor)
        form.addRow("CPU threads:", self.threads)
        form.addRow("Model folder:", model_row)
        form.addRow("", check_row)
        form.addRow("", self.check_result)
        return box

    def _build_buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            lambda: self.set_settings(AppSettings())
        )
        return buttons

    def set_settings(self, settings: AppSettings) -> None:
        self.detail.setCurrentIndex(max(self.detail.findData(settings.image_detail), 0))
        self.temperature.setValue(settings.temperature)
        self.top_p.setValue(settings.top_p)
        self.top_k.setValue(settings.top_k)
        self.presence_penalty.setValue(settings.presence_penalty)
        self.max_new_tokens.setValue(settings.max_new_tokens)
        self.threads.setValue(settings.threads)
        self.model_dir.setText(settings.model_dir)
        self.serve_local.setChecked(settings.serve_local)
        self.serve_port.setValue(settings.serve_port)
        self._update_detail_info()
        self._update_serve_info()

    def settings(self) -> AppSettings:
        return replace(
            AppSettings(),
            image_detail=self.detail.currentData(),
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            presence_penalty=round(self.presence_penalty.value(), 4),
            max_new_tokens=self.max_new_tokens.value(),
            threads=self.threads.value(),
            model_dir=self.model_dir.text().strip(),
            serve_local=self.serve_local.isChecked(),
            serve_port=self.serve_port.value(),
        )

    def model_folder(self) -> Path | None:
        """The folder the Model folder field names (its placeholder, the default, when empty)."""
        text = self.model_dir.text().strip()
        return Path(text).expanduser() if text else self._default_model_dir

    def check_model_files(self) -> None:
        """Hash every file of the model folder off the GUI thread and say what was found."""
        folder = self.model_folder()
        if folder is None or self._check is not None:
            return
        self.check_button.setEnabled(False)
        self.check_result.setText(f"Checking the files in {folder}…")
        self._check = FileCheck(folder)
        self._check.progressed.connect(self.check_result.setText)
        self._check.verdict.connect(lambda _intact, message: self.check_result.setText(message))
        self._check.finished.connect(self._check_ended)
        self._check.start()

    def _check_ended(self) -> None:
        if self._check is not None:
            self._check.wait()  # `finished` comes just before the thread ends: let it end first
            self._check = None
        self.check_button.setEnabled(True)

    def done(self, result: int) -> None:
        """Closing stops a check that is still running (its thread must end before the dialog)."""
        if self._check is not None:
            self._check.stop()
            self._check = None
        super().done(result)

    def _build_serve_box(self) -> QGroupBox:
        """Off by default; when on, the address and an example other programs can copy."""
        self.serve_local = QCheckBox("Serve on this computer")
        self.serve_local.setToolTip(
            "Other programs on this computer can use the model through an "
            "OpenAI-compatible API. Nothing is reachable from other computers."
        )
        self.serve_port = QSpinBox(minimum=1024, maximum=65535)
        self.serve_url = QLineEdit(readOnly=True)
        self.serve_example = QPlainTextEdit(readOnly=True)
        self.serve_example.setObjectName("serveExample")
        self.serve_example.setMaximumHeight(90)
        self.serve_copy = QPushButton("Copy example")
        self.serve_copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.serve_example.toPlainText()))
        self.serve_local.toggled.connect(self._update_serve_info)
        self.serve_port.valueChanged.connect(self._update_serve_info)
        box = QGroupBox("Local API")
        form = QFormLayout(box)
        form.addRow(self.serve_local)
        form.addRow("Port:", self.serve_port)
        form.addRow("Address:", self.serve_url)
        form.addRow(self.serve_example)
        form.addRow("", self.serve_copy)
        return box

    def _update_serve_info(self) -> None:
        on = self.serve_local.isChecked()
        url = serve_url(self.serve_port.value())
        self.serve_url.setText(url if on else "off")
        self.serve_example.setPlainText(serve_example(url) if on else "")
        for widget in (self.serve_url, self.serve_example, self.serve_copy):
            widget.setEnabled(on)

    def _update_detail_info(self) -> None:
        self.detail_info.setText(detail_summary(self.detail.currentData(), self._current_image, self._cost))

    def _browse(self) -> None:
        start = self.model_dir.text() or str(self._default_model_dir or "")
        folder = QFileDialog.getExistingDirectory(self, "Model folder", start)
        if folder:
            self.model_dir.setText(folder)


def detail_limit(detail: str, cost: CostFunction | None) -> int:
    """The most tokens one image takes at `detail`: a square image larger than the detail's pixel
    budget, counted by the loaded model (`cost`) or, before one is loaded, by the engine's rule
    with the default image settings."""
    side = 2 * math.isqrt(DETAIL_PRESETS[detail])
    if cost is not None:
        return cost(side, side, detail).tokens
    return tokens_for(side, side, ImageProcessorConfig(), DETAIL_PRESETS[detail])


def detail_summary(detail: str, image: tuple[int, int] | None, cost: CostFunction | None) -> str:
    """What each choice costs for the current image, the chosen one first:
    'The current image (1600×900) at standard detail: 252 image tokens, about 14 s to read on
    this computer. At high detail: 1000 image tokens, about 55 s.'"""
    if image is None:
        return "Add an image to see what it costs at this detail."
    if cost is None:
        return "The cost of the current image shows once the model is loaded."
    width, height = image
    try:
        estimates = {name: cost(width, height, name) for name in IMAGE_DETAILS}
    except Exception as error:  # an unusable image: the pane already said why
        return f"The current image cannot be used: {error}"

    def one(name: str, first: bool) -> str:
        estimate = estimates[name]
        text = f"{estimate.tokens} image tokens"
        if estimate.seconds is not None:
            text += f", {about(estimate.seconds)} to read" + (" on this computer" if first else "")
        return text

    others = " ".join(f"At {name} detail: {one(name, False)}." for name in IMAGE_DETAILS if name != detail)
    text = f"The current image ({width}×{height}) at {detail} detail: {one(detail, True)}. {others}"
    if all(e.seconds is None for e in estimates.values()):
        text += " The time to read it shows once this computer's speed is measured."
    return text


def serve_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def serve_example(url: str) -> str:
    """A command a user can paste into a terminal to see the server answer."""
    return (
        f'curl {url}/chat/completions -H "Content-Type: application/json" '
        """-d '{"model": "iris", "messages": [{"role": "user", "content": "Hello!"}]}'"""
    )


def _double(minimum: float, maximum: float, step: float, decimals: int) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    return box
