"""Python's cyclic garbage collector runs in whichever thread happens to cross an allocation
threshold. When that is the engine thread (it allocates a lot while loading and answering) and
the garbage holds Qt objects (a closed dialog, a removed message, an old window), Qt objects are
destroyed off the GUI thread and the process crashes: seen as "Garbage-collecting" segfaults in
the engine thread. So automatic collection is switched off and the GUI thread collects on a
timer instead, with the same thresholds (the pattern calibre and other PyQt apps use)."""

from __future__ import annotations

import gc

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QTimer

CHECK_INTERVAL_MS = 500

_guard: GuiThreadGarbageCollector | None = None


class GuiThreadGarbageCollector(QObject):
    def __init__(self, parent: QObject, interval_ms: int = CHECK_INTERVAL_MS):
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(interval_ms)

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold, as the interpreter would."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return


def install_gc_guard() -> GuiThreadGarbageCollector:
    """Once per process, after the QApplication exists and from its (GUI) thread."""
    global _guard
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("install_gc_guard() needs a QApplication first.")
    if _guard is None or not shiboken6.isValid(_guard):  # none yet, or its application is gone
        _guard = GuiThreadGarbageCollector(app)
    return _guard


def uninstall_gc_guard() -> None:
    """Automatic collection back on (for tests that share the process with non-Qt ones)."""
    global _guard
    if _guard is not None and shiboken6.isValid(_guard):
        _guard._timer.stop()
        _guard.deleteLater()
    _guard = None
    gc.enable()
