"""One engine measurement run (a child process of bench.run, so its peak RSS is its own).

Prints one JSON object: load time and RSS, vision encode at 448 and 896, time to first token for
an image + question, decode speed over 128 tokens (EOS ignored), a follow-up question's time to
first token, text prefill speed, and the peak RSS while filling a 4k context (the phase's own peak,
from the kernel's VmHWM, and the whole run's, which includes encoding an 896x896 image).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from engine.engine import Engine, EngineOptions
from engine.events import TurnStats
from engine.sampling import SamplingOptions


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM), so a phase's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mb() -> float:
    """The peak since reset_peak_rss(); the kernel updates VmHWM lazily, so never below VmRSS."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return max(int(line.split()[1]) / 1024, rss_mb())
    return peak_rss_mb()


def photo(side: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], -1)
    return Image.fromarray(np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8))


def long_prompt(engine, context: int) -> str:
    """Plain text that fills all but 64 tokens of a `context`-token window."""
    words = " ".join(f"item{i % 997} is next to item{(i * 7) % 991}." for i in range(context))
    return engine.prompts.decode(engine.prompts.encode(words)[: context - 64])


def turn(conv, text, images=(), sampling=None, detail=None) -> TurnStats:
    stats = None
    for event in conv.ask(text, list(images), sampling, detail=detail):
        stats = event
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--load-only", action="store_true", help="only time loading (a first start)")
    args = ap.parse_args(argv)
    out: dict = {}
    t0 = time.perf_counter()
    engine = Engine(Path(args.model_dir), EngineOptions(threads=args.threads, max_context=args.context, verify=False))
    out["load_s"] = time.perf_counter() - t0
    if engine.decoder.wait_for_prefill_graph():  # an optional prompt graph loads in the background
        out["prompt_graph_ready_s"] = time.perf_counter() - t0
    out["rss_after_load_mb"] = rss_mb()
    if args.load_only:
        json.dump(out, sys.stdout)
        return 0
    # Measure a fixed number of tokens whatever random weights say: no token ends an answer.
    engine.parts = replace(engine.parts, eos_ids=frozenset())
    greedy = SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=1)

    for side, detail in ((448, "standard"), (896, "high")):
        conv = engine.new_conversation()
        stats = turn(conv, "Describe this image.", [photo(side, side)], greedy, detail)
        out[f"vision_{side}_s"] = stats.vision_seconds
        out[f"ttft_{side}_s"] = stats.time_to_first_token
        out[f"image_tokens_{side}"] = stats.image_tokens
        out[f"prompt_tokens_{side}"] = stats.prompt_tokens

    conv = engine.new_conversation()
    first = turn(
        conv,
        "Describe this image in detail.",
        [photo(448, 1)],
        SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=args.decode_tokens),
    )
    out["decode_tokens"] = first.new_tokens
    out["decode_tok_s"] = first.decode_tokens_per_second
    follow = turn(conv, "What colours stand out?", (), greedy)
    out["followup_ttft_s"] = follow.time_to_first_token
    out["followup_prompt_tokens"] = follow.prompt_tokens

    out["rss_before_long_context_mb"] = rss_mb()
    peak_before = peak_rss_mb()  # the reset below also clears the process's ru_maxrss
    phase_peak = reset_peak_rss()
    conv = engine.new_conversation()
    stats = turn(
        conv,
        long_prompt(engine, args.context),
        (),
        SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=17),
    )
    out["long_prompt_tokens"] = stats.prompt_tokens
    out["prefill_tok_s"] = stats.prompt_tokens / stats.prefill_seconds
    out["decode_tok_s_long_context"] = stats.decode_tokens_per_second
    out["context_used"] = stats.context_used
    out["peak_rss_mb"] = max(peak_before, peak_rss_mb())
    if phase_peak:
        # The phase starts at rss_before: memory freed between that reading and the reset would
        # otherwise leave the kernel's restarted counter below where the phase began.
        out["peak_rss_long_context_mb"] = max(phase_peak_rss_mb(), out["rss_before_long_context_mb"])
        out["peak_rss_mb"] = max(out["peak_rss_mb"], out["peak_rss_long_context_mb"])
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
