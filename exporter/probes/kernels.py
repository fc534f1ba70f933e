"""Exported nodes on their own, and an interleaved timer for comparing them."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from engine.kernel_probe import probe_session

from ..graph.builder import FLOAT, GraphBuilder
from ..graph.ops import WeightFormat, linear


def matmul_session(k: int, n: int, emit: Callable[[GraphBuilder, str], str], threads: int | None = None):
    """A graph x [M, k] -> [M, n] made of the nodes `emit(g, x)` adds, run as the engine runs."""
    g = GraphBuilder("probe")
    x = g.input("x", FLOAT, [None, k])
    y = emit(g, x)
    g.output(y, y, FLOAT, [None, n])
    return probe_session(g.graph(), threads)


def linear_session(w_nk: np.ndarray, fmt: WeightFormat, threads: int | None = None) -> ort.InferenceSession:
    """One Linear layer x [M, K] -> [M, N] over a [N, K] weight, stored in `fmt` as the exporter stores it."""
    n, k = w_nk.shape
    return matmul_session(k, n, lambda g, x: linear(g, x, "probe", w_nk, None, fmt), threads)


def best_seconds(steps: list[Callable[[], object]], budget: float) -> list[float]:
    """Best time of each step over about `budget` seconds, their runs interleaved so a busy moment
    hits all alike (each runs once first: prepacking and first touch)."""
    for step in steps:
        step()
    best = [float("inf")] * len(steps)
    start = time.perf_counter()
    while time.perf_counter() - start < budget or max(best) == float("inf"):
        for i, step in enumerate(steps):
            t = time.perf_counter()
            step()
            best[i] = min(best[i], time.perf_counter() - t)
    return best
