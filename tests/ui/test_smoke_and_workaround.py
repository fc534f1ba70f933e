"""`main.py --smoke` end to end in a subprocess, the PySide6 6.12.0 emit() workaround, and garbage
collection kept on the GUI thread."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from tests.fixtures.greedy_answer import greedy_answer
from ui import pyside_guard
from ui.pyside_guard import keep_alive_if_leaking

ROOT = Path(__file__).resolve().parents[2]


def run_main(tmp_path, *args) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        HOME=str(tmp_path),
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_run_answers_and_saves_a_screenshot(tmp_path, tiny_fp32, make_image):
    shot = tmp_path / "window.png"
    # The user's real settings file (QSettings' INI path under XDG_CONFIG_HOME) with their choices.
    real_settings = tmp_path / "config" / "Iris" / "Iris.ini"
    real_settings.parent.mkdir(parents=True)
    real_settings.write_text("[options]\nimage_detail=high\nthreads=1\n")
    before = real_settings.read_bytes(), real_settings.stat().st_mtime_ns
    image = make_image("p.png", 400, 300)
    done = run_main(
        tmp_path,
        "--model-dir",
        tiny_fp32,
        "--smoke",
        image,
        "Describe the picture.",
        "--screenshot",
        shot,
        "--max-new-tokens",
        "12",
    )
    assert done.returncode == 0, done.stderr
    # The streamed answer, decoded greedily: the one the engine gives (the settings' detail, threads).
    expected = greedy_answer(tiny_fp32, image, "Describe the picture.", 12, image_detail="high", threads=1)
    assert expected.strip() and done.stdout == expected + "\n"
    image = QImage(str(shot))
    assert image.width() >= 800 and image.height() >= 500
    assert not any(tmp_path.rglob("conversation.json"))  # smoke runs leave no saved chat
    # Nor any measurement or other value in the user's settings.
    assert (real_settings.read_bytes(), real_settings.stat().st_mtime_ns) == before
    assert [p.name for p in (tmp_path / "config").rglob("*") if p.is_file()] == ["Iris.ini"]


def test_smoke_run_fails_at_once_when_the_question_is_refused(tmp_path, tiny_fp32, make_image):
    """The engine refuses a 10000x8 strip when asked; the run ends with its message, not the timeout."""
    strip = make_image("strip.png", 10000, 8)
    started = time.monotonic()
    done = run_main(tmp_path, "--model-dir", tiny_fp32, "--smoke", strip, "Hi", "--timeout", "120")
    assert done.returncode == 1
    assert "too long and thin" in done.stderr and "no answer after" not in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "config").exists()  # no settings file was made for the user either


def test_smoke_run_fails_clearly(tmp_path, tiny_fp32, make_image):
    done = run_main(tmp_path, "--model-dir", tmp_path, "--smoke", make_image(), "Hi")
    assert done.returncode == 2 and "not a complete Iris model folder" in done.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("text")
    done = run_main(tmp_path, "--model-dir", tiny_fp32, "--smoke", notes, "Hi")
    assert done.returncode == 1 and "notes.txt" in done.stderr


def test_the_guard_is_installed_when_the_application_is_created_not_on_import(tmp_path):
    script = (
        "import ui.pyside_guard as guard\n"
        "probed = []\n"
        "guard.keep_alive_if_leaking = lambda obj, call: probed.append(obj)\n"
        "import ui, ui.app, ui.worker\n"
        "assert probed == [], 'probed on import'\n"
        "ui.app.create_application([])\n"
        "assert probed == [True, None], probed\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="True and None are immortal: no call can lose them")
def test_the_installed_guard_keeps_true_and_none_alive_when_its_probes_leak_them(monkeypatch):
    """The guard as installed, against a probe whose calls lose a reference each, as PySide6 6.12.0's did."""
    if sys.getrefcount(True) > 1 << 39 or sys.getrefcount(None) > 1 << 39:
        pytest.skip("this PySide6 leaks: the guard kept True and None alive already")

    class LeakyProbe:
        class ping:  # stands in for the signal attribute
            @staticmethod
            def emit():
                ctypes.pythonapi.Py_DecRef(ctypes.py_object(True))
                return True

        def setObjectName(self, name):
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(None))

    monkeypatch.setattr(pyside_guard, "LeakProbe", LeakyProbe)
    assert pyside_guard.install_pyside_guard() == [True, None]
    assert sys.getrefcount(True) > 1 << 39 and sys.getrefcount(None) > 1 << 39
    assert pyside_guard.install_pyside_guard() == []  # guarded once


def test_the_guard_keeps_alive_an_object_that_a_call_leaks_and_leaves_others_alone():
    """The guard against a fake leaky call: one reference lost per call, as PySide6 6.12.0 did."""

    class Singleton:
        pass

    victim = Singleton()
    for _ in range(1000):  # room for the probe's own calls before the guard repays them
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(victim))

    def leaky_call():
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(victim))
        return victim

    assert keep_alive_if_leaking(victim, leaky_call)
    before = sys.getrefcount(victim)
    for _ in range(100_000):
        leaky_call()
    assert sys.getrefcount(victim) == before - 100_000 > 1 << 39  # far from being freed
    assert not keep_alive_if_leaking(victim, lambda: victim)  # a correct call is left alone


def test_garbage_is_collected_on_the_gui_thread_not_the_engine_thread(qtbot):
    """A cycle dropped on another thread, with plenty of allocations after it, is collected by the
    GUI thread's timer (with automatic collection on, the other thread would collect it itself)."""
    from ui.gc_guard import install_gc_guard

    install_gc_guard()
    assert not gc.isenabled()
    collected_by: list[str] = []
    kept: list = []

    class Node:
        pass

    def drop_a_cycle_then_allocate() -> None:
        node = Node()
        node.itself = node
        weakref.finalize(node, lambda: collected_by.append(threading.current_thread().name))
        del node
        kept.extend([] for _ in range(20_000))  # far past the first generation's threshold

    worker = threading.Thread(target=drop_a_cycle_then_allocate, name="engine-like")
    worker.start()
    worker.join()
    assert collected_by == []
    qtbot.waitUntil(lambda: bool(collected_by), timeout=5_000)
    assert collected_by == [threading.main_thread().name]
