"""The status bar's text and bar: a plain state ("Ready"), or a read's progress that moves
smoothly between the engine's events.

The engine reports progress at each image and prompt chunk, with the predicted length of the
step that starts (one image can take many seconds). A Qt timer moves the display on through
that step by the time elapsed, never past its end, so the bar and the seconds left keep moving
while the engine works. Before this computer's speeds are known the progress counts tokens:
then only the percentage shows, from the events alone."""

from __future__ import annotations

from PySide6.QtCore import QElapsedTimer, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from ui.waits import about

TICK_MS = 200
BAR_STEPS = 1000


def describe(text: str, progress, elapsed: float) -> tuple[str, float]:
    """('Reading the image… 40 % · about 5 s left', 0.4) for `progress` (engine Progress)
    `elapsed` seconds after it was reported."""
    fraction = progress.fraction_after(elapsed)
    line = f"{text}… {int(fraction * 100)} %"
    seconds_left = progress.seconds_left_after(elapsed)
    if seconds_left is not None:
        line += f" · {about(seconds_left)} left"
    return line, fraction


class StatusLine(QWidget):
    """The status bar's busy bar and the text beside it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setFixedWidth(120)
        self.bar.setMaximumHeight(12)
        self.bar.setTextVisible(False)
        self.bar.setVisible(False)
        self.label = QLabel()
        self.label.setObjectName("engineStatus")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label, 1)
        self._text, self._progress = "", None
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._render)

    def show_state(self, text: str, busy: bool) -> None:
        """A state: its text (with "…" while busy) and a busy bar without a percentage."""
        self._timer.stop()
        self._progress = None
        self.label.setText(text + ("…" if busy else ""))
        self.bar.setRange(0, 0)
        self.bar.setVisible(busy)

    def show_progress(self, text: str, progress) -> None:
        """A read in progress (engine Progress), moved on by the timer until the next event."""
        self._text, self._progress = text, progress
        self._clock.start()
        self.bar.setRange(0, BAR_STEPS)
        self.bar.setVisible(True)
        self._render()
        if progress.timed and progress.step_seconds > 0:
            self._timer.start()
        else:
            self._timer.stop()

    def _render(self) -> None:
        if self._progress is None:
            self._timer.stop()
            return
        line, fraction = describe(self._text, self._progress, self._clock.elapsed() / 1000)
        self.label.setText(line)
        self.bar.setValue(round(fraction * BAR_STEPS))
