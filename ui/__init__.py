"""Iris desktop UI (PySide6): main window, first-run wizard, and the engine worker thread."""
