"""A second decoder graph for prompt chunks shares the KV cache with the decode graph exactly."""

from __future__ import annotations

import numpy as np
import pytest

from engine.engine import Engine
from exporter.export import ExportOptions, export_model
from tests.engine.test_conversation import GREEDY, History, reference_generate, run_turn
from tests.reference import random_image


@pytest.fixture(scope="module")
def with_prefill(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("prefill")
    export_model(tiny_checkpoint[0], out / "fp32", ExportOptions("fp32", prefill="fp32"))
    export_model(tiny_checkpoint[0], out / "int8", ExportOptions("int4", prefill="int8"))
    return out


class CountingSession:
    def __init__(self, session):
        self.session, self.runs = session, 0

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, io, run_options=None):
        self.runs += 1
        return self.session.run_with_iobinding(io, run_options)


def test_prompt_graph_and_decode_graph_take_turns_on_one_cache(with_prefill, tiny_checkpoint):
    """fp32 weights in both graphs: any slip in sharing the cache would change the tokens."""
    engine = Engine(with_prefill / "fp32")
    assert engine.decoder.wait_for_prefill_graph(60)
    counter = CountingSession(engine.decoder.prefill_session)
    engine.decoder.prefill_session = counter
    conv = engine.new_conversation()
    history = History(engine)
    pending: list[int] = []
    for text, images in [
        ("Describe this image.", [random_image(300, 200, 1)]),
        ("More?", []),
        ("And this one, compared with the first?", [random_image(200, 260, 4)]),
    ]:
        history.add_question(text, images, pending)
        stats = run_turn(conv, text, images)[-1]
        assert stats.token_ids == reference_generate(tiny_checkpoint[1], history.ids, history.images, 12)
        history.add_answer(stats.token_ids[:-1], "")
        last = stats.token_ids[-1]
        pending = ([last] if last not in engine.eos_ids else []) + [engine.prompts.end_of_turn_id]
    assert counter.runs == 2  # the two image questions; the short follow-up and decode steps use int4/fp32


def test_int8_prompt_graph_is_closer_to_fp32_than_int4(with_prefill, tiny_fp32):
    """int8 per-channel weights carry less error than int4 blocks: the fast path costs no accuracy."""
    from engine.engine import EngineOptions

    reference = Engine(tiny_fp32)
    fast = Engine(with_prefill / "int8")
    plain = Engine(with_prefill / "int8", EngineOptions(use_prefill_graph=False))
    assert fast.decoder.wait_for_prefill_graph(60) and not plain.decoder.wait_for_prefill_graph(0)
    ids = np.array(
        reference.prompts.encode(
            "<|im_start|>user\nTell me a story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"
        )
        * 3
    )
    pos = np.tile(np.arange(len(ids)), (3, 1))
    exact = reference.decoder.prefill(ids, pos)[-1]
    err_int8 = np.abs(fast.decoder.prefill(ids, pos)[-1] - exact).max() / np.abs(exact).max()
    err_int4 = np.abs(plain.decoder.prefill(ids, pos)[-1] - exact).max() / np.abs(exact).max()
    assert err_int8 < err_int4
    assert (
        run_turn(fast.new_conversation(), "Describe this image.", [random_image(300, 200, 1)], GREEDY)[-1].new_tokens
        == 12
    )


def test_the_engine_answers_while_the_prompt_graph_is_still_loading(with_prefill, monkeypatch):
    import threading

    from engine.runtime import DecoderRunner

    release = threading.Event()
    original = DecoderRunner._load_prefill

    def slow_load(self, path, threads):
        release.wait(30)
        original(self, path, threads)

    monkeypatch.setattr(DecoderRunner, "_load_prefill", slow_load)
    engine = Engine(with_prefill / "fp32")
    assert engine.decoder.prefill_session is None  # still loading
    early = run_turn(engine.new_conversation(), "Describe this image.", [random_image(300, 200, 1)])[-1]
    release.set()
    assert engine.decoder.wait_for_prefill_graph(60)
    late = run_turn(engine.new_conversation(), "Describe this image.", [random_image(300, 200, 1)])[-1]
    assert early.token_ids == late.token_ids  # fp32 in both graphs: the same answer either way


_LEAVE_WHILE_LOADING = '''
import sys, threading, time
from engine.engine import Engine

in_session_setup = threading.Event()

def watch(frame, event, arg):
    if event == "c_call" and getattr(arg, "__name__", "") == "initialize_session":
        in_session_setup.set()

threading.setprofile(watch)  # applies to the loader thread the engine starts


class SlowTeardown:
    """Keeps the interpreter finalizing until the prompt graph's session set-up has returned."""

    def __del__(self, sleep=time.sleep):
        sleep(1.0)


teardown = SlowTeardown()
engine = Engine(sys.argv[1])
assert in_session_setup.wait(60)
raise SystemExit("leaving while the prompt graph loads")
'''


def test_leaving_python_while_the_prompt_graph_loads_exits_cleanly(with_prefill, tmp_path):
    """A program that exits (here by raising) while onnxruntime is still setting up the prompt
    graph in the background must end with its own exit code, not SIGABRT. The script waits until
    the loader is inside onnxruntime and keeps finalization busy, so the race happens every time."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "leave.py"
    script.write_text(_LEAVE_WHILE_LOADING)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, str(script), str(with_prefill / "int8")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "terminate called" not in done.stderr
        assert done.returncode == 1, done.stderr
        assert "leaving while the prompt graph loads" in done.stderr


def test_calibration_times_both_graphs_that_read_prompts(with_prefill):
    """Short chunks go through the decoder and long ones through the prompt graph: each gets
    two sizes, so both can predict, and the next start measures nothing again."""
    engine = Engine(with_prefill / "int8")
    assert engine.decoder.wait_for_prefill_graph(60)
    assert engine.calibrate()
    assert engine.speeds.has_chunks("decoder") and engine.speeds.has_chunks("prompt")
    assert engine.estimate_image(448, 448).seconds > 0
