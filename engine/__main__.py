"""Command line: stream an answer about images, or run a multi-turn script (also the benchmark's entry).

python -m engine MODEL_DIR --image PATH [--image PATH ...] --prompt TEXT [--max-new-tokens N]
                 [--greedy | --temperature T --top-p P --top-k K --seed S] [--json]
python -m engine MODEL_DIR --conversation FILE.json [--json]

Options and the conversation file are checked before the model loads; every error is one line on
stderr and exit code 2. `--temperature 0` means greedy decoding, as OpenAI-style clients expect.
In a conversation file, a turn with "images" and no "text" attaches them to the next question and
reads them at once, as the app does while the user types; that question's stats say how many of
its prompt tokens were read ahead and how many were left when it was sent. With --json there is
one entry per question; a conversation that fails still prints the questions answered before it,
plus an "error" field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from .engine import MIN_CONTEXT, Engine, EngineOptions
from .errors import ContextFullError, EngineError
from .events import ReadAhead, TextEvent, TurnStats
from .image import DETAIL_PRESETS
from .sampling import argmax_options
from .script import ScriptTurn, read_script


def _number(kind, check, rule: str):
    """An argparse type: `kind(text)` that `check` accepts, else argparse's own one-line error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {rule} (got {text})")
        return value

    return parse


_AT_LEAST_ONE = _number(int, lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = _number(int, lambda v: v >= 0, "0 or more")
_TEMPERATURE = _number(float, lambda v: math.isfinite(v) and v >= 0, "0 (greedy) or more")
_TOP_P = _number(float, lambda v: 0 < v <= 1, "above 0 and at most 1")
_FINITE = _number(float, math.isfinite, "a finite number")
_CONTEXT = _number(int, lambda v: v >= MIN_CONTEXT, f"at least {MIN_CONTEXT} tokens")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, like every other error of this command (argparse would add its usage)."""
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m engine", description="Chat about images with an exported Qwen3-VL.")
    ap.add_argument("model_dir")
    ap.add_argument("--image", action="append", help="an image file (repeat for several)")
    ap.add_argument("--prompt")
    ap.add_argument(
        "--conversation",
        help='JSON list of user turns: {"text": ..., "images": [paths]}; '
        "a turn with images and no text attaches them to the next question "
        "and reads them at once; relative image paths are taken from the "
        "file's folder",
    )
    ap.add_argument("--max-new-tokens", type=_AT_LEAST_ONE)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--temperature", type=_TEMPERATURE, help="0 means greedy, as --greedy")
    ap.add_argument("--top-p", type=_TOP_P)
    ap.add_argument("--top-k", type=_NOT_NEGATIVE, help="0 turns top-k off")
    ap.add_argument("--presence-penalty", type=_FINITE)
    ap.add_argument("--seed", type=_NOT_NEGATIVE)
    ap.add_argument("--threads", type=_AT_LEAST_ONE)
    ap.add_argument("--max-context", type=_CONTEXT, default=EngineOptions.max_context)
    ap.add_argument("--detail", choices=sorted(DETAIL_PRESETS), default="standard")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument(
        "--speed-file",
        help="keep this machine's measured speeds here between runs, so each "
        "question's wait is predicted (the app keeps its own)",
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="measure this machine first where the speed file has nothing yet (a few seconds)",
    )
    return ap


def _sampling(engine: Engine, args):
    overrides = {
        k: v
        for k, v in (
            ("temperature", args.temperature),
            ("top_p", args.top_p),
            ("top_k", args.top_k),
            ("presence_penalty", args.presence_penalty),
            ("seed", args.seed),
            ("max_new_tokens", args.max_new_tokens),
        )
        if v is not None
    }
    if args.greedy or args.temperature == 0:
        overrides = argmax_options(**overrides)
    return engine.default_sampling(**overrides)


def _turns(args) -> list[ScriptTurn]:
    if args.conversation:
        return read_script(Path(args.conversation))
    if args.prompt is None:
        raise EngineError("give --prompt TEXT or --conversation FILE.json")
    images = [Path(p) for p in args.image or []]
    for path in images:
        if not path.exists():
            raise EngineError(f"the image '{path}' does not exist")
    return [ScriptTurn(args.prompt, images)]


def _run(engine: Engine, turns: list[ScriptTurn], sampling, args, results: list[dict]) -> None:
    """Attach and ask the turns in order, appending each answered question to `results`."""
    conv = engine.new_conversation()
    attached: list[Path] = []  # the next question's images read ahead so far, in order
    read_ahead: list[dict] = []
    for turn in turns:
        if turn.attach_only:
            ahead = _attach(conv, turn, args)
            attached += turn.images
            read_ahead.append(dataclasses.asdict(ahead))
            continue
        if results and not args.json:
            print(f"\n--- turn {turn.number}: {turn.text}")
        results.append(_ask(conv, turn.text, [*attached, *turn.images], sampling, args, read_ahead))
        attached, read_ahead = [], []


def _attach(conv, turn: ScriptTurn, args) -> ReadAhead:
    """Read an attach-only turn's images now, ahead of the question that follows it."""
    ahead = None
    for event in conv.attach(turn.images):
        if isinstance(event, ReadAhead):
            ahead = event
    if not args.json:
        names = ", ".join(p.name for p in turn.images)
        print(
            f"[turn {turn.number}: read {names} ahead of the next question: {ahead.tokens_read} tokens in "
            f"{ahead.vision_seconds + ahead.prefill_seconds:.2f} s]",
            file=sys.stderr,
        )
    return ahead


def _ask(conv, text: str, images: list[Path], sampling, args, read_ahead: list[dict]) -> dict:
    """One question, streamed to stdout unless --json; its JSON entry."""
    pieces, stats = [], None
    for event in conv.ask(text, images, sampling):
        if isinstance(event, TextEvent):
            pieces.append(event.text)
            if not args.json:
                print(event.text, end="", flush=True)
        elif isinstance(event, TurnStats):
            stats = event
    stats_dict = dataclasses.asdict(stats)
    stats_dict["left_tokens"] = stats.prompt_tokens - stats.ahead_tokens  # what was still to read at send
    if not args.json:
        ahead = (
            f"{stats.ahead_tokens} of {stats.prompt_tokens} prompt tokens read ahead, " if stats.ahead_tokens else ""
        )
        predicted = f" (predicted {stats.predicted_wait:.2f} s)" if stats.predicted_wait is not None else ""
        print(
            f"\n[{stats.new_tokens} tokens, {ahead}first after {stats.time_to_first_token:.2f} s{predicted}, "
            f"{stats.decode_tokens_per_second:.1f} tok/s, {stats.stop_reason}]",
            file=sys.stderr,
        )
    return {
        "text": "".join(pieces),
        "token_ids": stats_dict.pop("token_ids"),
        "stats": stats_dict,
        "read_ahead": read_ahead,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results: list[dict] = []
    started = False
    try:
        turns = _turns(args)
        speed_file = Path(args.speed_file) if args.speed_file else None
        engine = Engine(
            Path(args.model_dir),
            EngineOptions(
                threads=args.threads, max_context=args.max_context, image_detail=args.detail, speed_file=speed_file
            ),
        )
        for warning in engine.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.calibrate:
            started_at = time.perf_counter()
            engine.calibrate()
            print(f"[measured this machine in {time.perf_counter() - started_at:.1f} s]", file=sys.stderr)
        sampling = _sampling(engine, args)
        started = True
        _run(engine, turns, sampling, args, results)
    except (EngineError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        message = "interrupted" if interrupted else str(exc)
        if isinstance(exc, ContextFullError) and not results:  # the first question: the option is too small
            message += f" Or raise --max-context (it is {args.max_context})."
        if args.json and args.conversation and started:  # keep the finished turns
            print(json.dumps({"turns": results, "error": message}, ensure_ascii=False))
        if not interrupted:
            print(f"error: {message}", file=sys.stderr)
        return 130 if interrupted else 2
    if args.json:
        out = {"turns": results} if args.conversation else results[0]
        out.update(cpu=engine.cpu.to_dict(), warnings=engine.warnings)  # speed depends on the processor
        print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
