"""Page 1: download a model from the Hub, or use a folder the user already has; and where to save it.

Sizes and free space are shown before anything is written, and Next is refused with the reason when
something does not fit. Asking the Hub for the file list takes a network round trip, so it runs on a
Task, a moment after the user stops typing the model id.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QStyle,
    QVBoxLayout,
    QWidget,
    QWizardPage,
)

from engine.probe_cache import OptionAdvice
from exporter.download import DownloadPlan
from exporter.errors import ExportError
from exporter.export import ExportOptions
from exporter.probes.prompt_graph import PromptGraphAdvice, prompt_graph_advice
from ui.paths import data_dir

from . import memory
from .assess import Assessment, assess_download, assess_folder
from .choice import (
    FAST_PREFILL,
    NEXT_PAGE,
    PRECISION_CHOICES,
    HubEstimate,
    Mode,
    estimate_hub_download,
    split_repo_text,
)
from .task import Task
from .work_page import ERROR_STYLE

PLAN_DELAY_MS = 400  # wait this long after the last keystroke before asking the Hub
RECHECK_MS = 3000  # free space and folders change behind our back: look again this often
MEASURING_HINT = "Measuring what it gains on this computer…"


def measure_prompt_graph_advice() -> PromptGraphAdvice:
    """A second of the int4 and int8 kernels on this CPU, cached in the data folder."""
    return prompt_graph_advice(data_dir() / "prompt-graph-advice.json")


class ChoosePage(QWizardPage):
    def __init__(self, default_target: Path, repo_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTitle("Get the model")
        self.setSubTitle(
            "Iris runs Qwen3-VL on your own computer. The model is downloaded once and converted "
            "into a format your CPU runs quickly; nothing leaves your computer afterwards."
        )
        self._estimate: HubEstimate | None = None
        self._estimate_error = ""
        self._estimate_for: tuple[str, str] | None = None  # (repo id, revision) of the estimate or error
        self._planning: Task | None = None
        self._retired: list[Task] = []  # superseded or answered; kept until their thread has ended
        self._assessment = Assessment()
        self._plan_timer = QTimer(self, singleShot=True, interval=PLAN_DELAY_MS)
        self._plan_timer.timeout.connect(self._start_planning)
        self._recheck_timer = QTimer(self, interval=RECHECK_MS)
        self._recheck_timer.timeout.connect(self._recheck)
        self._recheck_timer.start()
        self._build(default_target, repo_id)
        self._start_measuring()

    # ---- layout ---------------------------------------------------------------------------------
    def _build(self, default_target: Path, repo_id: str) -> None:
        self._make_widgets(default_target, repo_id)
        self._lay_out()
        self._connect()

    def _make_widgets(self, default_target: Path, repo_id: str) -> None:
        self.download_radio = QRadioButton("Download from Hugging Face")
        self.folder_radio = QRadioButton("Use a folder I already have")
        self.download_radio.setChecked(True)
        modes = QButtonGroup(self)
        modes.addButton(self.download_radio)
        modes.addButton(self.folder_radio)
        self.repo_edit = QLineEdit(repo_id)
        self.repo_edit.setPlaceholderText("organisation/model-name")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a downloaded checkpoint, or an Iris model folder")
        self.folder_browse = QPushButton("Browse…")
        self.target_edit = QLineEdit(str(default_target))
        self.target_browse = QPushButton("Browse…")
        self.precision_combo = QComboBox()
        for value, label in PRECISION_CHOICES:
            self.precision_combo.addItem(label, value)
        self.prefill_check = QCheckBox("Faster first answer")
        self.prefill_check.setEnabled(False)  # until the measurement says it pays on this computer
        self.prefill_hint = QLabel()
        self.prefill_hint.setWordWrap(True)
        self._prefill_blocker = memory.fast_prefill_blocker(memory.total_ram_bytes())  # RAM does not change
        self._advice: PromptGraphAdvice | None = None
        self.prefill_hint.setText(self._prefill_blocker or MEASURING_HINT)
        self._measuring: Task | None = None
        self._to_measure: list[tuple] = []  # (measure, on success, on failure), run one after another
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(ERROR_STYLE)
        self.check_again_button = QPushButton("Check again")

    def _lay_out(self) -> None:
        source = QGridLayout()
        source.setColumnMinimumWidth(0, 24)
        source.addWidget(self.download_radio, 0, 0, 1, 3)
        source.addWidget(QLabel("Model:"), 1, 1)
        source.addWidget(self.repo_edit, 1, 2, 1, 2)
        source.addWidget(self.folder_radio, 2, 0, 1, 3)
        source.addWidget(QLabel("Folder:"), 3, 1)
        source.addWidget(self.folder_edit, 3, 2)
        source.addWidget(self.folder_browse, 3, 3)
        source.setColumnStretch(2, 1)
        target_row = QHBoxLayout()
        target_row.addWidget(self.target_edit, 1)
        target_row.addWidget(self.target_browse)
        options = QFormLayout()
        options.addRow("Save the model in:", target_row)
        options.addRow("Weights:", self.precision_combo)
        speed = QVBoxLayout()  # the box and its hint as one form row
        speed.setSpacing(8)
        speed.addLayout(self._check_box(self.prefill_check, self.prefill_hint))
        options.addRow("Speed:", speed)
        problem_row = QHBoxLayout()
        problem_row.addWidget(self.problem_label, 1)
        problem_row.addWidget(self.check_again_button, 0, Qt.AlignTop)

        layout = QVBoxLayout(self)
        layout.addLayout(source)
        layout.addSpacing(12)
        layout.addLayout(options)
        layout.addSpacing(12)
        layout.addWidget(self.summary_label)
        layout.addLayout(problem_row)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.download_radio.toggled.connect(self._refresh)
        self.repo_edit.textChanged.connect(self._repo_edited)
        self.folder_edit.textChanged.connect(self._refresh)
        self.target_edit.textChanged.connect(self._refresh)
        self.precision_combo.currentIndexChanged.connect(self._refresh)
        self.prefill_check.toggled.connect(self._refresh)
        self.folder_browse.clicked.connect(lambda: self._browse(self.folder_edit, "The folder you already have"))
        self.target_browse.clicked.connect(lambda: self._browse(self.target_edit, "Where to save the model"))
        self.check_again_button.clicked.connect(self._start_planning)

    def _check_box(self, check: QCheckBox, hint: QLabel) -> QVBoxLayout:
        """A checkbox with its explanation beneath, indented to line up with the checkbox's text."""
        style = self.style()
        indent = style.pixelMetric(QStyle.PM_IndicatorWidth) + style.pixelMetric(QStyle.PM_CheckBoxLabelSpacing)
        hint.setContentsMargins(indent, 0, 0, 0)
        box = QVBoxLayout()
        box.setSpacing(2)
        box.addWidget(check)
        box.addWidget(hint)
        return box

    # ---- QWizardPage ----------------------------------------------------------------------------
    @property
    def download_plan(self) -> DownloadPlan | None:
        """The files the Hub lists for the repository typed, once it has answered."""
        return self._estimate.plan if self._estimate is not None else None

    def initializePage(self) -> None:
        self._refresh()

    def revisit(self) -> None:
        """Back from the download page: what the HF cache holds has changed, so ask the Hub again."""
        if self.is_download_mode:
            self._start_planning()

    def isComplete(self) -> bool:
        return self._assessment.ready

    def nextId(self) -> int:
        mode = self._assessment.mode
        return int(NEXT_PAGE[mode]) if mode is not None else int(NEXT_PAGE[Mode.DOWNLOAD])

    def validatePage(self) -> bool:
        """Judge again with fresh free-space figures: the disk may have filled up since."""
        self._refresh()
        if not self._assessment.ready:
            return False
        choice = self.wizard().choice
        choice.mode = self._assessment.mode
        choice.target_dir = Path(self.target_edit.text().strip()).expanduser().absolute()
        choice.precision = self.precision_combo.currentData()
        choice.prefill = self._options().prefill
        choice.replace_target = self._assessment.replace_target
        choice.plan = None
        choice.source_dir = choice.source_info = None
        if choice.mode is Mode.DOWNLOAD:
            choice.repo_id, choice.revision = self._repo()
            choice.plan = self._estimate.plan
        else:
            choice.source_dir = self._assessment.source.path.absolute()
            choice.source_info = {"kind": "folder", "path": str(choice.source_dir)}
        return True

    # ---- judging the inputs ---------------------------------------------------------------------
    @property
    def is_download_mode(self) -> bool:
        return self.download_radio.isChecked()

    @property
    def measuring(self) -> bool:
        """The kernel measurements that decide the speed boxes are still running."""
        return self._measuring is not None

    @property
    def _prefill_offered(self) -> bool:
        return not self._prefill_blocker and self._advice is not None and self._advice.offered

    def _options(self) -> ExportOptions:
        """What the conversion will be asked to write, as far as this page decides it."""
        fast = self.prefill_check.isChecked() and self._prefill_offered
        return ExportOptions(
            self.precision_combo.currentData(),
            prefill=FAST_PREFILL if fast else None,
        )

    def _repo(self) -> tuple[str, str]:
        return split_repo_text(self.repo_edit.text())

    @Slot()
    def _recheck(self) -> None:
        if self.isVisible() and self._planning is None:
            self._refresh()

    @Slot()
    def _refresh(self) -> None:
        download = self.is_download_mode
        self.repo_edit.setEnabled(download)
        self.folder_edit.setEnabled(not download)
        self.folder_browse.setEnabled(not download)
        options = self._options()
        if download:
            if self._estimate_for != self._repo() and self._planning is None and not self._plan_timer.isActive():
                self._plan_timer.start(0)  # first show, or back in download mode after a change
            pending = self._planning is not None or self._plan_timer.isActive()
            assessment = assess_download(
                self._estimate, self._estimate_error, pending, self.target_edit.text(), options
            )
        else:
            assessment = assess_folder(self.folder_edit.text(), self.target_edit.text(), options)
        uses_target = assessment.mode is not Mode.VERIFY
        self.target_edit.setEnabled(uses_target)
        self.target_browse.setEnabled(uses_target)
        self.precision_combo.setEnabled(uses_target)
        self.prefill_check.setEnabled(uses_target and self._prefill_offered)
        self._show(assessment)

    def _show(self, assessment: Assessment) -> None:
        self._assessment = assessment
        self.summary_label.setText("\n".join(assessment.lines + ((assessment.waiting,) if assessment.waiting else ())))
        self.problem_label.setText(assessment.problem)
        self.problem_label.setVisible(bool(assessment.problem))
        self.check_again_button.setVisible(self.is_download_mode and bool(self._estimate_error))
        self.completeChanged.emit()

    # ---- measuring whether the speed options pay here ----------------------------------------------
    def _start_measuring(self) -> None:
        """One measurement at a time: two at once would share the cores and both read slow."""
        if not self._prefill_blocker:
            self._to_measure.append((measure_prompt_graph_advice, self._on_measured, self._on_measure_failed))
        self._measure_next()

    def _measure_next(self) -> None:
        if self._measuring is not None:
            self._retire(self._measuring)
            self._measuring = None
        if not self._to_measure:
            return
        measure, succeeded, failed = self._to_measure.pop(0)
        task = Task(lambda report, cancel: measure(), self)
        task.succeeded.connect(succeeded)
        task.failed.connect(failed)
        self._measuring = task
        task.start()

    @Slot(object, object)
    def _on_measured(self, task: Task, advice: PromptGraphAdvice) -> None:
        self._advice = advice
        self._show_advice(self.prefill_check, self.prefill_hint, advice)

    @Slot(object, object)
    def _on_measure_failed(self, task: Task, error: BaseException) -> None:
        self._show_failure(self.prefill_hint, error)

    def _show_advice(self, check: QCheckBox, hint: QLabel, advice: OptionAdvice) -> None:
        hint.setText(advice.hint())
        if advice.suggested:
            check.setChecked(True)  # the user can still untick it
        self._measure_next()
        self._refresh()

    def _show_failure(self, hint: QLabel, error: BaseException) -> None:
        hint.setText(f"Not offered: its speed could not be measured on this computer ({error}).")
        self._measure_next()
        self._refresh()

    # ---- asking the Hub -------------------------------------------------------------------------
    @Slot()
    def _repo_edited(self) -> None:
        self._estimate, self._estimate_error, self._estimate_for = None, "", None
        self._plan_timer.start(PLAN_DELAY_MS)
        self._refresh()

    @Slot()
    def _start_planning(self) -> None:
        self._plan_timer.stop()
        if self._planning is not None:  # its answer would be stale: let it end, ignore it
            self._retire(self._planning)
        repo_id, revision = self._repo()
        task = Task(lambda report, cancel: estimate_hub_download(repo_id, revision), self)
        task.wanted = (repo_id, revision)
        task.succeeded.connect(self._on_planned)
        task.failed.connect(self._on_plan_failed)
        self._planning = task
        self._estimate, self._estimate_error, self._estimate_for = None, "", None
        task.start()
        self._refresh()

    @Slot(object, object)
    def _on_planned(self, task: Task, estimate: HubEstimate) -> None:
        self._take_answer(task, estimate, "")

    @Slot(object, object)
    def _on_plan_failed(self, task: Task, error: BaseException) -> None:
        self._take_answer(task, None, _describe(error))

    def _take_answer(self, task: Task, estimate: HubEstimate | None, error: str) -> None:
        if task is not self._planning:
            return
        self._retire(task)
        if task.wanted != self._repo():  # typed on meanwhile; the timer asks again
            return
        self._estimate, self._estimate_error, self._estimate_for = estimate, error, task.wanted
        self._refresh()

    def _retire(self, task: Task) -> None:
        if task is self._planning:
            self._planning = None
        self._retired = [t for t in self._retired if not t.isFinished()] + [task]

    def stop_work(self) -> None:
        """Wait for Hub queries still running (they end within the Hub timeout); called on close."""
        self._plan_timer.stop()
        self._recheck_timer.stop()
        self._to_measure.clear()
        for task in [self._planning, self._measuring, *self._retired]:
            if task is not None:
                task.wait()
        self._planning = None

    # ---- folders --------------------------------------------------------------------------------
    def _browse(self, edit: QLineEdit, caption: str) -> None:
        start = edit.text().strip() or str(Path.home())
        chosen = QFileDialog.getExistingDirectory(self, caption, start)
        if chosen:
            edit.setText(chosen)


def _describe(error: BaseException) -> str:
    if isinstance(error, ExportError):
        return str(error)
    return f"Could not ask the Hub about this model: {type(error).__name__}: {error}"
