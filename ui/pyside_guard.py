"""A guard against a PySide6 6.12.0 bug, installed when the application is created (pyproject excludes that
release, but a user's environment may still have it): `SignalInstance.emit()` returns True, and every method
that returns nothing (setText, update, processEvents...) returns None, without taking a reference,
so each call steals one. After a few thousand calls (one or more per streamed token) CPython < 3.12
aborts with "Fatal Python error: bool_dealloc / none_dealloc", mid-answer or at exit. A probe
measures the leak; only if there is one, the object gets a reference count no session can use up,
which is what Python 3.12 does for every such singleton ("immortal" objects). A correct PySide6,
or Python 3.12+, is left alone.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

_PROBE_CALLS = 64
_PLENTY = 1 << 40  # references: more than any session can lose, far from the counter's limit


def references_lost(obj: object, call: Callable[[], object], calls: int = _PROBE_CALLS) -> int:
    """How many references to `obj` `calls` calls of `call` lost (repaid before returning)."""
    before = sys.getrefcount(obj)
    for _ in range(calls):
        call()
    lost = before - sys.getrefcount(obj)
    for _ in range(max(lost, 0)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    return lost


def keep_alive_if_leaking(obj: object, call: Callable[[], object]) -> bool:
    """Give `obj` plenty of references if `call` leaks one per call; True if it did."""
    if sys.getrefcount(obj) > _PLENTY or references_lost(obj, call) < _PROBE_CALLS:
        return False  # guarded already, or no leak
    ctypes.c_ssize_t.from_address(id(obj)).value += _PLENTY  # ob_refcnt leads every CPython object
    return True


class LeakProbe(QObject):
    """What the guard calls to measure the leak: a signal's emit() and a method returning nothing."""

    ping = Signal()


def install_pyside_guard() -> list[object]:
    """Probe emit() (which returns True) and a method returning nothing (None); guard whichever
    leaks. Returns the objects guarded (none on a correct PySide6); safe to call again."""
    probe = LeakProbe()
    probes = ((True, probe.ping.emit), (None, lambda: probe.setObjectName("probe")))
    return [obj for obj, call in probes if keep_alive_if_leaking(obj, call)]
