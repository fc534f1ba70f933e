"""Page 3: convert the checkpoint into Iris' ONNX artifacts, one progress bar per stage, with Cancel.

exporter.export writes into a hidden folder beside the target and renames it at the end, so a
cancelled or failed conversion leaves nothing that looks like a model, and Start again is safe.
"""

from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QWidget

from exporter.export import ExportProgress, ExportResult, export_model

from .task import Job
from .units import human_bytes, human_duration
from .work_page import WorkPage

STAGES = (  # exporter.export's stage names, in order, with what they mean to a user
    ("checking", "Reading the checkpoint"),
    ("vision", "Image encoder"),
    ("decoder", "Language model"),
    ("finishing", "Writing the model folder"),
)


class ConvertPage(WorkPage):
    cancel_text = "Cancel conversion"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Converting the model",
            "The checkpoint is turned into the format Iris runs on your CPU. This takes a few minutes.",
            parent,
        )
        grid = QGridLayout()
        self.stage_bars: dict[str, QProgressBar] = {}
        for row, (stage, label) in enumerate(STAGES):
            bar = QProgressBar()
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(bar, row, 1)
            self.stage_bars[stage] = bar
        grid.setColumnStretch(1, 1)
        self.content.addLayout(grid)
        self.target_label = QLabel()
        self.target_label.setWordWrap(True)
        self.content.addWidget(self.target_label)

    def initializePage(self) -> None:
        choice = self.wizard().choice
        note = " It replaces the model there once it is complete." if choice.replace_target else ""
        self.target_label.setText(f"Saving to {choice.target_dir}.{note}")
        super().initializePage()

    def make_job(self) -> Job:
        choice = self.wizard().choice
        source, target, info = choice.source_dir, choice.target_dir, choice.source_info
        options = choice.export_options()

        def job(report, cancel) -> ExportResult:
            return export_model(source, target, options, progress=report, cancel=cancel, source_info=info)

        return job

    def reset_view(self) -> None:
        for bar in self.stage_bars.values():
            bar.setRange(0, 1)
            bar.setValue(0)

    def show_progress(self, progress: ExportProgress) -> None:
        bar = self.stage_bars.get(progress.stage)
        if bar is None:  # a stage this page does not know yet: still show that work goes on
            self._set_status(f"{progress.stage}: {progress.done}/{progress.total}")
            return
        for stage, _ in STAGES:  # earlier stages are done once a later one reports
            if stage == progress.stage:
                break
            done_bar = self.stage_bars[stage]
            done_bar.setValue(done_bar.maximum())
        bar.setRange(0, max(progress.total, 1))
        bar.setValue(min(progress.done, max(progress.total, 1)))

    def show_success(self, result: ExportResult) -> None:
        for bar in self.stage_bars.values():
            bar.setValue(bar.maximum())
        self._set_status(
            f"Converted in {human_duration(result.seconds)}: {human_bytes(result.total_bytes)} in {result.out_dir}."
        )

    def cancelled_message(self) -> str:
        return "Conversion cancelled. Nothing was written to the target folder; Start again begins anew."
