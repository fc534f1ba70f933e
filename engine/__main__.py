"""Command line: stream an answer about images, or run a multi-turn script (also the benchmark's entry).

python -m engine MODEL_DIR --image PATH [--image PATH ...] --prompt TEXT [--max-new-tokens N]
                 [--greedy | --temperature T --top-p P --top-k K --seed S] [--json]
python -m engine MODEL_DIR --conversation FILE.json [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .engine import Engine, EngineOptions
from .errors import EngineError
from .events import TextEvent, TurnStats
from .image import DETAIL_PRESETS


def _sampling(engine: Engine, args):
    overrides = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p), ("top_k", args.top_k),
                                   ("presence_penalty", args.presence_penalty), ("seed", args.seed),
                                   ("max_new_tokens", args.max_new_tokens)) if v is not None}
    if args.greedy:  # plain argmax decoding: no penalties unless asked for
        overrides.update(greedy=True, repetition_penalty=1.0)
        overrides.setdefault("presence_penalty", 0.0)
    return engine.default_sampling(**overrides)


def _turns(args) -> list[dict]:
    if args.conversation:
        try:
            turns = json.loads(Path(args.conversation).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineError(f"cannot read the conversation file: {exc}") from None
        if not isinstance(turns, list) or not all(isinstance(t, dict) and "text" in t for t in turns):
            raise EngineError('the conversation file must be a JSON list of {"text": ..., "images": [...]}')
        return turns
    if args.prompt is None:
        raise EngineError("give --prompt TEXT or --conversation FILE.json")
    return [{"text": args.prompt, "images": args.image or []}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine", description="Chat about images with an exported Qwen3-VL.")
    ap.add_argument("model_dir")
    ap.add_argument("--image", action="append", help="an image file (repeat for several)")
    ap.add_argument("--prompt")
    ap.add_argument("--conversation", help="JSON list of user turns: {\"text\": ..., \"images\": [paths]}")
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--presence-penalty", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-context", type=int, default=EngineOptions.max_context)
    ap.add_argument("--detail", choices=sorted(DETAIL_PRESETS), default="standard")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    try:
        turns = _turns(args)
        engine = Engine(Path(args.model_dir), EngineOptions(threads=args.threads, max_context=args.max_context,
                                                            image_detail=args.detail))
        sampling = _sampling(engine, args)
        conv = engine.new_conversation()
        results = []
        for i, turn in enumerate(turns):
            if i and not args.json:
                print(f"\n--- turn {i + 1}: {turn['text']}")
            pieces, stats = [], None
            for event in conv.ask(turn["text"], [Path(p) for p in turn.get("images") or []], sampling):
                if isinstance(event, TextEvent):
                    pieces.append(event.text)
                    if not args.json:
                        print(event.text, end="", flush=True)
                elif isinstance(event, TurnStats):
                    stats = event
            stats_dict = dataclasses.asdict(stats)
            results.append({"text": "".join(pieces), "token_ids": stats_dict.pop("token_ids"), "stats": stats_dict})
            if not args.json:
                print(f"\n[{stats.new_tokens} tokens, first after {stats.time_to_first_token:.2f} s, "
                      f"{stats.decode_tokens_per_second:.1f} tok/s, {stats.stop_reason}]", file=sys.stderr)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        out = {"turns": results} if args.conversation else results[0]
        print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
