"""Iris desktop UI (PySide6): main window, first-run wizard, and the engine worker thread.

Importing this package first works around a PySide6 6.12.0 bug: `SignalInstance.emit()` returns
True without taking a reference to it, so every emit from Python steals one reference to True.
After a few hundred emits (one per streamed token) CPython < 3.12 aborts with "Fatal Python
error: bool_dealloc", mid-answer or at exit. The fix is only installed when a probe shows the
leak, so a fixed PySide6 (or an immortal True, Python 3.12+) leaves emit untouched.
"""
from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal, SignalInstance

_PROBE_EMITS = 64


def _references_lost_per_emit() -> int:
    """How many references to True the probe's emits lost (0 on a correct PySide6)."""

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBE_EMITS):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    for _ in range(max(lost, 0)):  # repay what the probe itself took
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
    return lost // _PROBE_EMITS


def _install_emit_fix() -> None:
    leaky_emit = SignalInstance.emit

    def emit(self, *args):
        result = leaky_emit(self, *args)
        if type(result) is bool:  # give back the reference emit() did not take
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(result))
        return result

    emit.__doc__ = leaky_emit.__doc__
    SignalInstance.emit = emit


if _references_lost_per_emit() >= 1:
    _install_emit_fix()
