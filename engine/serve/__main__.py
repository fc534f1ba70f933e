"""Command line: serve an exported model to other programs through an OpenAI-compatible API.

python -m engine.serve MODEL_DIR [--host 127.0.0.1] [--port 8088] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..engine import Engine, EngineOptions
from ..errors import EngineError
from ..image import DETAIL_PRESETS
from .guard import check_exposure
from .limits import Limits
from .server import DEFAULT_HOST, DEFAULT_PORT, LocalServer


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m engine.serve", description="Serve an exported Qwen3-VL model through an OpenAI-compatible API."
    )
    ap.add_argument("model_dir")
    ap.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: this computer only); any other needs --api-key",
    )
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("IRIS_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $IRIS_API_KEY)",
    )
    ap.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (repeatable)",
    )
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-context", type=int, default=EngineOptions.max_context)
    ap.add_argument(
        "--detail", choices=sorted(DETAIL_PRESETS), default="standard", help="image detail when a request says auto"
    )
    ap.add_argument("--slots", type=int, default=Limits.slots, help="conversations whose cache is kept for reuse")
    ap.add_argument(
        "--max-waiting",
        type=int,
        default=Limits.max_waiting,
        help="requests that may wait behind the one being answered (then 429)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.slots < 1 or args.max_waiting < 0:
        print("error: --slots must be at least 1 and --max-waiting at least 0", file=sys.stderr)
        return 2
    try:
        check_exposure(args.host, args.api_key)  # before the model loads: a refusal should be quick
        engine = Engine(
            Path(args.model_dir),
            EngineOptions(threads=args.threads, max_context=args.max_context, image_detail=args.detail),
        )
        limits = Limits(slots=args.slots, max_waiting=args.max_waiting)
        server = LocalServer(engine, args.host, args.port, args.api_key, args.allow_host, limits)
    except (EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"Serving {server.service.model_id} at {server.url} (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
