"""A scripted engine for the UI's read-ahead states: each read step waits until the test lets it
through, so a test can act (type, send, remove, stop) while an image is being read."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from engine.engine import ReadEstimate
from engine.events import Progress, ReadAhead, Stage, StatusEvent, TextEvent, TurnStats

STEP_SECONDS = 10.0  # predicted seconds of each read step (one per image)
IMAGE_TOKENS = {"standard": 100, "high": 400}
ANSWER = ("It is ", "blue.")


@dataclass
class Script:
    """What the engine does and what it was asked; shared with the engine thread."""

    seconds: float | None = 8.0  # estimate_image's predicted seconds (None: not measured yet)
    prepare_error: Exception | None = None
    fail_after_step: bool = False  # prepare_error comes after the first read step, not at once
    calls: list = field(default_factory=list)  # ("prepare", names, detail) / ("ask", text, names) / ...
    results: list = field(default_factory=list)  # every ReadAhead a prepare ended with
    calibrations: list = field(default_factory=list)  # what each calibrate() returned
    contexts: list = field(default_factory=list)  # the context of every estimate_image() call
    calibration_steps: int = 0  # > 0: calibrate() takes this many steps (it checks should_stop between)
    _gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    open_gate: bool = False  # True: reads run without waiting for step()
    prompt_graph: threading.Event | None = None  # a prompt graph loading in the background until set

    def step(self, count: int = 1) -> None:
        """Let `count` read steps through."""
        for _ in range(count):
            self._gate.release()

    def wait_for_step(self, cancelled: threading.Event) -> bool:
        """In a read step: wait for the test; False if cancelled first."""
        while not self.open_gate:
            if cancelled.is_set():
                return False
            if self._gate.acquire(timeout=0.02):
                break
        return not cancelled.is_set()

    def record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def kinds(self) -> list[str]:
        with self._lock:
            return [call[0] for call in self.calls]


def _names(images) -> list[str]:
    return [Path(p).name for p in images]


def _contents(images) -> list[bytes]:
    return [Path(p).read_bytes() for p in images]


class ScriptedConversation:
    def __init__(self, script: Script):
        self.script = script
        self.turns: list = []
        self._cancel = threading.Event()
        self._attached: list[bytes] = []  # contents of the images read ahead
        self._detail = None

    def cancel(self) -> None:
        self._cancel.set()

    def restore(self, turns, detail=None):
        self._cancel.clear()
        self.script.record("restore", len(turns))
        yield StatusEvent(Stage.READING_PROMPT, Progress(0, 1, 1, False))
        self.turns = [tuple(t) for t in turns]
        yield _stats(stop_reason="restored")

    def prepare(self, images, detail=None):
        self._cancel.clear()
        self.script.record("prepare", _names(images), detail)
        if self.script.prepare_error is not None and not self.script.fail_after_step:
            raise self.script.prepare_error
        wanted = _contents(images)
        kept = 0
        while (
            kept < min(len(wanted), len(self._attached))
            and wanted[kept] == self._attached[kept]
            and detail == self._detail
        ):
            kept += 1
        total = STEP_SECONDS * (len(wanted) - kept)
        for index in range(kept, len(wanted)):
            done = STEP_SECONDS * (index - kept)
            yield StatusEvent(Stage.ENCODING_IMAGE, Progress(done, total, STEP_SECONDS, True))
            if not self.script.wait_for_step(self._cancel):
                result = ReadAhead(len(self._attached), 0, 0, 0.0, 0.0, cancelled=True)
                self.script.results.append(result)
                yield result
                return
            if self.script.prepare_error is not None:
                raise self.script.prepare_error
        self._attached, self._detail = wanted, detail
        tokens = IMAGE_TOKENS[detail or "standard"] * len(wanted)
        result = ReadAhead(len(wanted), tokens, tokens, 0.1, 0.1)
        self.script.results.append(result)
        yield result

    def ask(self, text, images=None, sampling=None, detail=None):
        self._cancel.clear()
        self.script.record("ask", text, _names(images))
        ahead = self._attached == _contents(images) and self._detail == detail and bool(images)
        self._attached = []
        if self._cancel.is_set():
            yield _stats(stop_reason="cancelled", asked=False)
            return
        yield StatusEvent(Stage.ANSWERING)
        for piece in ANSWER:
            yield TextEvent(piece)
        tokens = IMAGE_TOKENS[detail or "standard"] * len(images)
        self.turns.append((text, images))
        yield _stats(ahead_tokens=tokens if ahead else 0, image_tokens=tokens)

    def regenerate(self, sampling=None):
        yield from self.ask("again", [], sampling)


def _stats(stop_reason="eos", asked=True, ahead_tokens=0, image_tokens=0) -> TurnStats:
    return TurnStats(
        image_tokens=image_tokens,
        prompt_tokens=image_tokens + 10,
        new_tokens=2,
        vision_seconds=0.0,
        prefill_seconds=0.0,
        time_to_first_token=0.0,
        decode_tokens_per_second=0.0,
        stop_reason=stop_reason,
        context_used=image_tokens + 12,
        context_limit=4096,
        asked=asked,
        ahead_tokens=ahead_tokens,
    )


class ScriptedDecoder:
    def __init__(self, loaded: threading.Event | None):
        self.loaded = loaded

    def wait_for_prefill_graph(self, timeout=None) -> bool:
        return self.loaded is not None and self.loaded.wait(timeout)


class ScriptedEngine:
    warnings = ()

    def __init__(self, script: Script):
        self.script = script
        self.manifest = SimpleNamespace(precision="scripted")
        self.options = SimpleNamespace(use_prefill_graph=True)
        self.decoder = ScriptedDecoder(script.prompt_graph)

    def image_tokens(self, width, height, image_detail=None) -> int:
        return IMAGE_TOKENS[image_detail or "standard"]

    def estimate_image(self, width, height, image_detail=None, context=0) -> ReadEstimate:
        self.script.contexts.append(context)
        return ReadEstimate(self.image_tokens(width, height, image_detail), self.script.seconds)

    def new_conversation(self) -> ScriptedConversation:
        self.script.record("new_conversation")
        return ScriptedConversation(self.script)

    def calibrate(self, should_stop) -> bool:
        while self.script.prompt_graph is not None and not self.script.prompt_graph.wait(0.02):
            if should_stop():  # as engine.calibrate: it waits for the prompt graph, unless stopped
                self.script.calibrations.append(False)
                return False
        for _ in range(self.script.calibration_steps):
            if should_stop():
                self.script.calibrations.append(False)
                return False
            threading.Event().wait(0.02)
        self.script.calibrations.append(True)
        return True
