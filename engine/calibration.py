"""A short measurement of this machine at first load, so the first wait can be predicted.

A few seconds of the real graphs (one 448x448 image, two prompt chunks on a scratch cache) plus
the vision attention on its own: its cost grows with the square of the patches, so one image
size alone cannot tell how a larger image will take. Each step is skipped once samples exist
(they are stored per model and CPU), and a caller that needs the engine stops it between steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper

from .image import preprocess
from .kernel_probe import probe_session

CALIBRATION_SIDE = 448  # pixels: the most common image size at standard detail
# Prompt chunk sizes (tokens) to time: for each graph that reads chunks, its smallest and largest
# of these (a question's length, and enough to see the per-token cost). With a prompt graph, the
# decoder reads the short chunks (16, 24) and the prompt graph the long ones (32, 96).
PROMPT_CHUNKS = (16, 24, 32, 96)
PROBE_PATCHES = 1024


def calibrate(engine, should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Measure what the engine's speed model lacks; True once it can predict every read.

    Waits for the prompt graph to load and takes the engine's turn (waiting behind an answer); a
    `should_stop()` that turns true ends it then or between steps, keeping what was measured."""
    speeds, decoder = engine.speeds, engine.decoder
    while decoder.prefill_loading:  # loading it in the background would slow what is timed
        if should_stop():
            return False
        decoder.wait_for_prefill_graph(timeout=0.1)
    sizes = _chunk_sizes_to_time(decoder)
    graphs = {decoder.graph_for(size) for size in sizes}
    if speeds.has_vision() and all(speeds.has_chunks(g) for g in graphs):
        return True
    turns = engine.turn_taking
    if not turns.hold(should_stop):
        return False
    asked = should_stop

    def should_stop() -> bool:  # the local server's questions wait for the engine too
        return asked() or turns.others_waiting

    bound = decoder.cache
    try:
        if not speeds.has_vision():
            _measure_vision(engine)
            if should_stop():
                return False
            speeds.set_attention_probe(_attention_seconds_per_patch2(engine))
        scratch = decoder.new_cache()
        decoder.bind(scratch)
        for size in sizes:  # the first of a graph also warms it up for the second
            if should_stop():
                return False
            if speeds.has_chunks(decoder.graph_for(size)):
                continue
            scratch.reset()
            ids = np.full(size, 198, np.int64)  # "\n": any token costs the same
            t0 = time.perf_counter()
            decoder.forward(ids, np.tile(np.arange(size, dtype=np.int64), (3, 1)))
            speeds.add_chunk(decoder.graph_for(size), size, 0, time.perf_counter() - t0)
        return True
    finally:
        decoder.bind(bound)
        turns.release()
        speeds.save()


def _chunk_sizes_to_time(decoder) -> list[int]:
    by_graph: dict[str, list[int]] = {}
    for size in PROMPT_CHUNKS:
        by_graph.setdefault(decoder.graph_for(size), []).append(size)
    return [size for group in by_graph.values() for size in sorted({min(group), max(group)})]


def _measure_vision(engine) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (CALIBRATION_SIDE, CALIBRATION_SIDE, 3), dtype=np.uint8)
    image = preprocess(Image.fromarray(pixels), engine.image_config, engine.options.max_pixels("standard"))
    t, h, w = image.grid_thw
    for _ in range(2):  # the first run also pays one-time set-up
        t0 = time.perf_counter()
        engine.vision.encode(image.pixel_values, image.grid_thw)
        seconds = time.perf_counter() - t0
    engine.speeds.add_vision(int(t * h * w), seconds)


def _attention_seconds_per_patch2(engine) -> float:
    """Seconds per patch^2 of the vision tower's attention: one layer's MultiHeadAttention
    timed alone (as the exported graph runs it), times the layers."""
    vision = engine.manifest.vision
    hidden, heads, depth = vision.hidden_size, vision.num_heads, vision.depth
    names = ("q", "k", "v")
    node = helper.make_node(
        "MultiHeadAttention",
        list(names),
        ["y"],
        domain="com.microsoft",
        num_heads=heads,
        scale=float((hidden // heads) ** -0.5),
    )
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, None, hidden]) for n in names]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, hidden])
    session = probe_session(helper.make_graph([node], "attention", inputs, [output]), engine.options.threads)
    x = np.random.default_rng(0).standard_normal((1, PROBE_PATCHES, hidden)).astype(np.float32)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        session.run(None, {"q": x, "k": x, "v": x})
        best = min(best, time.perf_counter() - t0)
    return depth * best / PROBE_PATCHES**2
