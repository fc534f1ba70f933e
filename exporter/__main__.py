"""Command line: python -m exporter SOURCE OUT_DIR [--precision int4|fp32]."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import ExportError
from .export import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_EMBED_BLOCK_SIZE,
    KV_CACHE_FORMATS,
    PRECISIONS,
    PREFILL_FORMATS,
    VISION_FORMATS,
    ExportOptions,
    ExportProgress,
    export_model,
)
from .source import resolve_source


def _printer():
    last = {"stage": None, "t": 0.0}

    def show(p: ExportProgress) -> None:
        now = time.monotonic()
        if p.stage != last["stage"] or p.done == p.total or now - last["t"] > 2:
            print(f"[{p.stage}] {p.done}/{p.total}", flush=True)
            last.update(stage=p.stage, t=now)

    return show


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m exporter", description="Convert a Qwen3-VL checkpoint into Iris' ONNX artifacts."
    )
    ap.add_argument("source", help="a local checkpoint folder or a Hugging Face model id (repo[@revision])")
    ap.add_argument("out_dir", help="artifact folder to create")
    ap.add_argument("--precision", choices=PRECISIONS, default="int4")
    ap.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, choices=(16, 32, 64, 128))
    ap.add_argument("--embed-block-size", type=int, default=DEFAULT_EMBED_BLOCK_SIZE, choices=(16, 32, 64, 128))
    ap.add_argument("--accuracy-level", type=int, default=DEFAULT_ACCURACY_LEVEL, choices=(0, 1, 2, 3, 4))
    ap.add_argument(
        "--vision",
        choices=VISION_FORMATS,
        help="vision weights (default: int8, fp32 with --precision fp32; int8-block quantizes "
        "weights and activations per block of 32: closer to fp32, speed depends on the CPU)",
    )
    ap.add_argument(
        "--prefill-graph",
        choices=PREFILL_FORMATS,
        help="also write a decoder for prompts with these weights (int8: 2-3x faster time to "
        "first token, ~4 GB more disk and memory)",
    )
    ap.add_argument(
        "--kv-cache",
        choices=KV_CACHE_FORMATS,
        help="KV cache type (default: fp16, fp32 with --precision fp32; fp32 needs twice the "
        "memory per token and measured no faster)",
    )
    ap.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    return ap


def _options(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        precision=args.precision,
        block_size=args.block_size,
        accuracy_level=args.accuracy_level,
        overwrite=args.overwrite,
        embed_block_size=args.embed_block_size,
        vision=args.vision,
        prefill=args.prefill_graph,
        kv_cache=args.kv_cache,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        source, info = resolve_source(args.source)
        result = export_model(source, Path(args.out_dir), _options(args), progress=_printer(), source_info=info)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled; nothing was written", file=sys.stderr)
        return 130
    print(f"Wrote {result.out_dir} in {result.seconds:.1f} s")
    for name, size in result.files.items():
        print(f"  {name:<22} {size / 1e6:10.1f} MB")
    print(f"  {'total':<22} {result.total_bytes / 1e6:10.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
