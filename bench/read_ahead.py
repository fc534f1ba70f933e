"""The wait after Send when the image was read while the question was typed, and the predictions.

    python -m bench.read_ahead MODEL_DIR [--image PATH] [--sizes 448,896] [--after 0,5,10,20]
                               [--speed-file PATH] [--threads N] [--json]

For each size, a photo is attached (conv.attach, its events consumed in a thread, as the app's
worker does) and a 12-token question is sent N seconds later: the send waits for a read still
running and continues it (as the app's worker queue does), then asks. The wait is measured from
the send to the first piece of text (or to the end of the prompt read, when the first token is no
text). Next to it: the cold wait (no attach, ask at once), the engine's predicted wait at the ask
against the measured one, and engine.estimate_image against the attach's measured read.

Calibration is part of what is measured: it runs first, on a fresh speed file unless
--speed-file names one (then stored speeds are used and refined, as in the app). The photo is
scikit-image's astronaut when scikit-image is installed (it is not a dependency of Iris), else a
synthetic image, which the output says; either is resized to each size.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from bench.photos import Photo, sample_photo
from bench.run import machine, machine_line
from engine.engine import Engine, EngineOptions
from engine.errors import EngineError
from engine.events import ReadAhead, Stage, StatusEvent, TextEvent, TurnStats
from engine.image import DETAIL_PRESETS, load_image
from engine.sampling import SamplingOptions

QUESTION = "What is in this picture, and which colours stand out?"  # 12 tokens in Qwen3-VL's tokenizer
FIRST_TOKEN = SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=1)


def load_photo(path: str | None) -> Photo:
    """The given file, else scikit-image's astronaut, else a synthetic image (with a note)."""
    return Photo(load_image(Path(path)), str(path)) if path else sample_photo("astronaut")


def detail_for(side: int) -> str:
    """The smallest detail preset that reads a side x side image without shrinking it."""
    fitting = [name for name, pixels in sorted(DETAIL_PRESETS.items(), key=lambda kv: kv[1]) if pixels >= side * side]
    return fitting[0] if fitting else max(DETAIL_PRESETS, key=DETAIL_PRESETS.get)


def ask(conv, text: str, image: Image.Image, detail: str, sent_at: float) -> dict:
    """Ask about `image` and time the wait from `sent_at` to the first text (or to the prompt's end)."""
    asked_at = time.perf_counter()
    first_text = read_end = None
    stats = None
    for event in conv.ask(text, [image], FIRST_TOKEN, detail):
        if isinstance(event, TextEvent) and first_text is None:
            first_text = time.perf_counter()
        elif isinstance(event, StatusEvent) and event.stage == Stage.ANSWERING:
            read_end = time.perf_counter()
        elif isinstance(event, TurnStats):
            stats = event
    first = first_text if first_text is not None else read_end
    return {
        "wait_s": first - sent_at,
        "ask_wait_s": first - asked_at,
        "until": "text" if first_text is not None else "prompt read",
        "prompt_tokens": stats.prompt_tokens,
        "ahead_tokens": stats.ahead_tokens,
        "left_tokens": stats.prompt_tokens - stats.ahead_tokens,
        "predicted_wait_s": stats.predicted_wait,
        "prediction_error": _error(stats.predicted_wait, first - asked_at),
    }


def cold(engine: Engine, text: str, image: Image.Image, detail: str) -> dict:
    """No attach: the question and its image are sent together."""
    return ask(engine.new_conversation(), text, image, detail, time.perf_counter())


def attached_before(engine: Engine, text: str, image: Image.Image, detail: str, after: float) -> dict:
    """Attach `image`, send `after` seconds later; the send waits for the read and continues it."""
    conv = engine.new_conversation()
    estimate = engine.estimate_image(*image.size, detail, context=0)
    done: dict = {}

    def read() -> None:
        try:
            for event in conv.attach([image], detail):
                if isinstance(event, ReadAhead):
                    done["ahead"] = event
        except BaseException as exc:  # re-raised in the sending thread
            done["error"] = exc

    started = time.perf_counter()
    reader = threading.Thread(target=read, name="attach", daemon=True)
    reader.start()
    time.sleep(max(started + after - time.perf_counter(), 0.0))
    sent_at = time.perf_counter()
    reader.join()
    if "error" in done:
        raise done["error"]
    ahead = done["ahead"]
    row = {"after_s": after, "still_reading_s": time.perf_counter() - sent_at}
    row.update(ask(conv, text, image, detail, sent_at))
    read_s = ahead.vision_seconds + ahead.prefill_seconds
    row.update(
        read_tokens=ahead.tokens_read,
        read_s=read_s,
        estimate_tokens=estimate.tokens,
        estimate_s=estimate.seconds,
        estimate_error=_error(estimate.seconds, read_s),
    )
    return row


def _error(predicted: float | None, actual: float) -> float | None:
    """(predicted - actual) / actual; None without a prediction."""
    return None if predicted is None or actual <= 0 else (predicted - actual) / actual


def measure(engine: Engine, picture: Photo, sizes: list[int], afters: list[float]) -> list[dict]:
    """Per size: the cold ask first (the engine's speeds then also know this size), then each delay."""
    out = []
    for side in sizes:
        image, detail = picture.image.resize((side, side), Image.BICUBIC), detail_for(side)
        print(f"{side}x{side}: cold ask ...", file=sys.stderr, flush=True)
        entry = {
            "side": side,
            "detail": detail,
            "image_tokens": engine.image_tokens(side, side, detail),
            "cold": cold(engine, QUESTION, image, detail),
            "attached": [],
        }
        for after in afters:
            print(f"{side}x{side}: attached {after:g} s before the send ...", file=sys.stderr, flush=True)
            entry["attached"].append(attached_before(engine, QUESTION, image, detail, after))
        out.append(entry)
    return out


def _percent(error: float | None) -> str:
    return "n/a" if error is None else f"{100 * error:+.0f} %"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def markdown(result: dict) -> str:
    lines = [
        machine_line(result["machine"], result["threads"], result["date"]),
        "",
        f"Calibration: {result['calibration_s']:.2f} s on "
        + (f"the speed file {result['speed_file']}" if result["speed_file"] else "a fresh speed file")
        + ("" if result["calibrated"] else " (stopped before it could predict every read)")
        + ".",
        f"Photo: {result['photo']['source']}"
        + (f" ({result['photo']['note']})" if result["photo"]["note"] else "")
        + f", resized to each size. Question: {result['question']['tokens']} tokens, one answer token.",
        "",
    ]
    for size in result["sizes"]:
        side, c = size["side"], size["cold"]
        lines += [
            f"### {side}x{side} ({size['detail']} detail, {size['image_tokens']} image tokens)",
            "",
            "| image attached | wait after Send | of which the read still running "
            "| tokens read ahead / left for the ask "
            "| predicted at the ask (error) | attach read: estimated / measured (error) |",
            "|---|---|---|---|---|---|",
            f"| not attached (cold) | {c['wait_s']:.2f} s | - | 0 / {c['left_tokens']} | "
            f"{_seconds(c['predicted_wait_s'])} ({_percent(c['prediction_error'])}) | - |",
        ]
        for r in size["attached"]:
            estimate = _seconds(r["estimate_s"])
            lines.append(
                f"| {r['after_s']:g} s before | {r['wait_s']:.2f} s | {r['still_reading_s']:.2f} s | "
                f"{r['ahead_tokens']} / {r['left_tokens']} | {_seconds(r['predicted_wait_s'])} "
                f"({_percent(r['prediction_error'])}) | {estimate} / {r['read_s']:.2f} s "
                f"({_percent(r['estimate_error'])}) |"
            )
        lines.append("")
    return "\n".join(lines)


def _numbers(kind, rule: str):
    def parse(text: str):
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if not values or any(not math.isfinite(v) or v < 0 or (kind is int and v < 1) for v in values):
            raise argparse.ArgumentTypeError(f"must be {rule} (got {text})")
        return values

    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.read_ahead", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--image", help="a photo to use instead of scikit-image's astronaut")
    ap.add_argument("--sizes", type=_numbers(int, "sides in pixels, at least 1"), default=[448, 896])
    ap.add_argument(
        "--after",
        type=_numbers(float, "seconds, 0 or more"),
        default=[0.0, 5.0, 10.0, 20.0],
        help="seconds between the attach and the send",
    )
    ap.add_argument("--speed-file", help="use and refine these stored speeds (default: a fresh file per run)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    args = ap.parse_args(argv)
    try:
        result = run(args)
    except EngineError as exc:  # a model folder or an image that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


def run(args) -> dict:
    """Load, calibrate and measure; the result as one dict."""
    picture = load_photo(args.image)
    with tempfile.TemporaryDirectory(prefix="iris-read-ahead-") as scratch:
        speed_file = Path(args.speed_file) if args.speed_file else Path(scratch) / "speeds.json"
        engine = Engine(Path(args.model_dir), EngineOptions(threads=args.threads, speed_file=speed_file, verify=False))
        engine.decoder.wait_for_prefill_graph()  # an optional prompt graph loads in the background
        print("calibrating ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        calibrated = engine.calibrate()
        calibration_s = time.perf_counter() - t0
        sizes = measure(engine, picture, args.sizes, args.after)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "machine": machine(),
        "speed_file": args.speed_file,
        "calibration_s": calibration_s,
        "calibrated": calibrated,
        "photo": {"source": picture.source, "synthetic": bool(picture.note), "note": picture.note},
        "question": {"text": QUESTION, "tokens": len(engine.prompts.encode(QUESTION))},
        "sizes": sizes,
    }


if __name__ == "__main__":
    sys.exit(main())
