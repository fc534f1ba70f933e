"""How long reading takes on this machine: the vision encoder and prompt reading, measured here.

The app predicts each wait ("196 tokens, about 8 s") and shows progress in seconds left, so the
predictions must come from this computer, not from a table. Two cost laws, fitted to samples:

- vision: seconds = a * patches + b * patches^2 (the layers are linear in the patches; the
  attention over all patches of an image is quadratic, and dominates large images);
- one prompt chunk of c tokens read after L cached ones, per graph (the decoder or the prompt
  graph): seconds = g + a * c + b * c * (L + c / 2) (a per-call cost: the weights are read once
  per call; a per-token cost; attention over what is cached).

Samples come from a short calibration at first load (engine/calibration.py) and then from every
image and chunk actually read, so predictions follow the machine. They are stored per model, CPU
and thread count in one small JSON file; no file means they are kept in memory only.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_VERSION = 1
KEEP = 24  # newest samples kept per kind: enough to fit, few enough to follow a changed machine


@dataclass(frozen=True)
class VisionSample:
    patches: int
    seconds: float


@dataclass(frozen=True)
class ChunkSample:
    graph: str  # which session read it ("decoder" or "prompt")
    tokens: int
    context: int  # tokens in the cache before the chunk
    seconds: float


def chunk_sizes(tokens: int, chunk: int) -> list[int]:
    """How a prompt of `tokens` is cut into chunks of at most `chunk` (as DecoderRunner.prefill)."""
    return [min(chunk, tokens - start) for start in range(0, tokens, chunk)]


class SpeedModel:
    """The samples of one (model, CPU, threads) and the laws fitted to them. Thread-safe: the
    engine thread adds samples while the UI thread asks for predictions."""

    def __init__(self, key: str, path: Path | None = None):
        self.key = key
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._vision: list[VisionSample] = []
        self._chunks: list[ChunkSample] = []
        self._attention_per_patch2: float | None = None  # the calibration's attention probe
        self._fits: dict = {}
        self._load()

    # -- samples ------------------------------------------------------------------------------
    def add_vision(self, patches: int, seconds: float) -> None:
        if patches > 0 and seconds > 0:
            with self._lock:
                self._vision = [*self._vision, VisionSample(int(patches), float(seconds))][-KEEP:]
                self._fits.clear()

    def add_chunk(self, graph: str, tokens: int, context: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            with self._lock:
                self._chunks = [*self._chunks, ChunkSample(graph, int(tokens), int(context), float(seconds))]
                self._chunks = self._newest_per_graph(self._chunks)
                self._fits.clear()

    def set_attention_probe(self, seconds_per_patch2: float) -> None:
        """The vision attention's quadratic cost, measured on its own (a prior for one image size)."""
        with self._lock:
            self._attention_per_patch2 = float(seconds_per_patch2)
            self._fits.clear()

    def has_vision(self) -> bool:
        with self._lock:
            return bool(self._vision)

    def has_chunks(self, graph: str) -> bool:
        with self._lock:
            return len({s.tokens for s in self._chunks if s.graph == graph}) >= 2

    # -- predictions --------------------------------------------------------------------------
    def vision_seconds(self, patches: int) -> float | None:
        """Predicted encoding time of one image of `patches` patches; None before any sample."""
        a, b = self._fit("vision", self._fit_vision) or (None, None)
        if a is None:
            return None
        return a * patches + b * patches * patches

    def chunk_seconds(self, graph: str, tokens: int, context: int) -> float | None:
        coefficients = self._fit(graph, lambda: self._fit_chunks(graph))
        if coefficients is None:
            return None
        g, a, b = coefficients
        return g + a * tokens + b * tokens * (context + tokens / 2)

    def chunk_plan(self, graph_for, tokens: int, context: int, chunk: int) -> list[float | None]:
        """Predicted time of each chunk when `tokens` are read after `context` cached ones in
        chunks of `chunk`; `graph_for(chunk_tokens)` names the graph that reads a chunk that size."""
        plan = []
        for size in chunk_sizes(tokens, chunk):
            plan.append(self.chunk_seconds(graph_for(size), size, context))
            context += size
        return plan

    def prompt_seconds(self, graph_for, tokens: int, context: int, chunk: int) -> float | None:
        """Predicted time to read `tokens` after `context` cached ones (see chunk_plan)."""
        plan = self.chunk_plan(graph_for, tokens, context, chunk)
        return None if None in plan else sum(plan)

    # -- storage ------------------------------------------------------------------------------
    def save(self) -> None:
        """Write this model's samples into the shared file (other keys are kept); never raises."""
        if self.path is None:
            return
        with self._lock:
            entry = {
                "vision": [[s.patches, s.seconds] for s in self._vision],
                "chunks": [[s.graph, s.tokens, s.context, s.seconds] for s in self._chunks],
                "attention_per_patch2": self._attention_per_patch2,
            }
        try:
            data = _read_file(self.path)
            data["entries"][self.key] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass  # predictions are a convenience: a read-only or full disk only loses them

    def _load(self) -> None:
        if self.path is None:
            return
        entry = _read_file(self.path)["entries"].get(self.key) or {}
        try:
            self._vision = [VisionSample(int(n), float(s)) for n, s in entry.get("vision", [])][-KEEP:]
            self._chunks = self._newest_per_graph(
                [ChunkSample(str(g), int(c), int(ctx), float(s)) for g, c, ctx, s in entry.get("chunks", [])]
            )
            probe = entry.get("attention_per_patch2")
            self._attention_per_patch2 = float(probe) if probe is not None else None
        except (TypeError, ValueError):  # a damaged entry: start afresh
            self._vision, self._chunks, self._attention_per_patch2 = [], [], None

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, name: str, fit):
        with self._lock:
            if name not in self._fits:
                self._fits[name] = fit()
            return self._fits[name]

    def _fit_vision(self):
        samples = self._vision
        if not samples:
            return None
        n = np.array([s.patches for s in samples], float)
        t = np.array([s.seconds for s in samples], float)
        if n.max() >= 1.5 * n.min():  # sizes far enough apart to tell the two terms apart
            fitted = _nonnegative_fit(np.stack([n, n * n], 1), t)
            if fitted is not None:
                return tuple(fitted)
        b = self._attention_per_patch2 or 0.0
        a = max(float(np.median((t - b * n * n) / n)), 0.0)
        return a, b

    def _fit_chunks(self, graph: str):
        samples = [s for s in self._chunks if s.graph == graph]
        if not samples:
            return None
        c = np.array([s.tokens for s in samples], float)
        ctx = np.array([s.context for s in samples], float) + c / 2
        t = np.array([s.seconds for s in samples], float)
        columns = [np.ones_like(c), c, c * ctx]
        use = [len(set(c)) >= 2, True, np.ptp(ctx) >= 128]  # only terms the samples can tell apart
        chosen = [col for col, keep in zip(columns, use) if keep]
        fitted = _nonnegative_fit(np.stack(chosen, 1), t)
        if fitted is None:
            return None
        it = iter(fitted)
        return tuple(float(next(it)) if keep else 0.0 for keep in use)

    @staticmethod
    def _newest_per_graph(chunks: Sequence[ChunkSample]) -> list[ChunkSample]:
        kept, seen = [], {}
        for sample in reversed(chunks):
            if seen.get(sample.graph, 0) < KEEP:
                seen[sample.graph] = seen.get(sample.graph, 0) + 1
                kept.append(sample)
        return kept[::-1]


def _nonnegative_fit(x: np.ndarray, t: np.ndarray) -> list[float] | None:
    """Least squares on relative error with coefficients >= 0 (a term that fits negative is
    dropped and the rest refitted): a cost never shrinks as work grows."""
    weights = 1.0 / t
    active = list(range(x.shape[1]))
    while active:
        solution, *_ = np.linalg.lstsq(x[:, active] * weights[:, None], np.ones_like(t), rcond=None)
        if (solution >= 0).all():
            out = [0.0] * x.shape[1]
            for index, value in zip(active, solution):
                out[index] = float(value)
            return out
        active.pop(int(np.argmin(solution)))
    return None


def _read_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") == _VERSION and isinstance(data.get("entries"), dict):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return {"version": _VERSION, "entries": {}}
