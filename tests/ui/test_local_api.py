"""The app's "Serve on this computer" setting: the real window serves its own engine to other
programs, and the chat and the server take turns without mixing their conversations."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from tests.ui.conftest import ask_and_wait, engine_turns


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat(url: str, text: str) -> dict:
    body = json.dumps(
        {"model": "iris", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 4}
    ).encode()
    request = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_window_serves_its_engine_when_asked_and_stops_when_turned_off(qtbot, open_window, tiny_fp32):
    port = free_port()
    window = open_window(tiny_fp32, wait_loaded=False, serve_local=True, serve_port=port, max_new_tokens=4)
    with qtbot.waitSignal(
        window.controller.servingChanged, timeout=60_000, check_params_cb=lambda url, error: bool(url)
    ) as serving:
        pass  # it starts once the model is loaded
    url = serving.args[0]
    assert url == f"http://127.0.0.1:{port}/v1"
    assert window.serve_label.isVisible() and url in window.serve_label.text()

    first, error = ask_and_wait(qtbot, window, "Hello there.")
    assert not error
    answer = chat(url, "Something else entirely.")
    assert answer["usage"]["completion_tokens"] >= 1
    second, error = ask_and_wait(qtbot, window, "And then?")
    assert not error
    # The chat kept its own history: both questions, and the server's request is not in it.
    assert [t.text for t in engine_turns(window)] == ["Hello there.", "And then?"]
    turns = window.session.record.turns  # the chat's cache grew from turn to turn: not reset by the server
    assert turns[1].stats["context_used"] > turns[0].stats["context_used"] > 0

    with qtbot.waitSignal(window.controller.servingChanged, timeout=30_000) as stopped:
        window.apply_settings(replace(window.settings, serve_local=False))
    assert stopped.args == ["", ""] and not window.serve_label.isVisible()
    with pytest.raises(urllib.error.URLError):
        chat(url, "Anyone there?")


def test_a_port_in_use_is_reported_and_the_chat_still_works(qtbot, open_window, tiny_fp32):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        window = open_window(tiny_fp32, wait_loaded=False, serve_local=True, serve_port=port, max_new_tokens=4)
        with qtbot.waitSignal(
            window.controller.servingChanged, timeout=60_000, check_params_cb=lambda url, error: bool(error)
        ) as failed:
            pass
    assert str(port) in failed.args[1] and "Choose another port" in failed.args[1]
    qtbot.waitUntil(lambda: window.info is not None, timeout=60_000)
    assert window.banner.isVisible() and "could not start" in window.banner.text()
    answer, error = ask_and_wait(qtbot, window, "Still here?")
    assert not error
