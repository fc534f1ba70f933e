"""Vision weight formats on real photos: how far each is from fp32, and how fast, on this CPU.

    python -m bench.vision_formats CHECKPOINT [--workdir DIR] [--formats fp32 int8] [--detail standard]

Builds only the vision graph of CHECKPOINT (e.g. the full-size random one from
bench.make_random_checkpoint) in each format, feeds scikit-image's sample photos through the
engine's own preprocessing, and reports the largest deviation of the image embeddings and of every
DeepStack level from the fp32 graph, as a fraction of the fp32 values' scale, with the encode time.
scikit-image is needed for the photos (pip install scikit-image); it is not a dependency of Iris.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.photos import SAMPLES, sample_photo
from engine.cpu import cpu_info
from engine.image import DETAIL_PRESETS, ImageProcessorConfig, load_image, preprocess
from engine.runtime import VisionRunner
from exporter.checkpoint import Checkpoint
from exporter.config import load_config
from exporter.graph.builder import GraphBuilder
from exporter.graph.ops import WeightFormat
from exporter.graph.vision import build_vision
from exporter.side_files import read_side_files
from exporter.writer import ExternalDataWriter


def build_vision_graph(checkpoint: Path, out: Path, kind: str) -> Path:
    """vision.onnx of `checkpoint` with weights stored as `kind`, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vision.onnx"
    if path.is_file():
        return path
    cfg, _ = load_config(checkpoint)
    ckpt = Checkpoint(checkpoint, cfg)
    g = GraphBuilder("vision", ExternalDataWriter(out / "vision.onnx.data"))
    build_vision(g, ckpt, cfg.vision, WeightFormat(kind), lambda done, total: None)
    g.save(path)
    return path


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.vision_formats")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "out" / "vision_formats")
    ap.add_argument(
        "--formats",
        nargs="+",
        default=["fp32", "int8"],
        help="the first is the reference: fp32, int8, int8-block (MatMulNBits 8-bit), int4",
    )
    ap.add_argument("--detail", choices=sorted(DETAIL_PRESETS), default="standard")
    ap.add_argument("--photos", nargs="+", choices=SAMPLES, default=list(SAMPLES))
    ap.add_argument("--image", type=Path, action="append", help="your own photo instead (repeatable)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    side = read_side_files(args.checkpoint)
    config = ImageProcessorConfig.from_preprocessor_json(side.preprocessor)
    runners = {
        kind: VisionRunner(build_vision_graph(args.checkpoint, args.workdir / kind, kind), args.threads)
        for kind in args.formats
    }
    print(f"CPU: {cpu_info().summary()} (class {cpu_info().cpu_class})\n")
    if args.image:
        pictures = {p.name: load_image(p) for p in args.image}
    else:
        samples = {name: sample_photo(name) for name in args.photos}
        pictures = {name: photo.image for name, photo in samples.items()}
        for note in sorted({photo.note for photo in samples.values() if photo.note}):
            print(f"Synthetic photos: {note}\n")
    print("| photo | format | embeds error | DeepStack errors | encode s |\n|---|---|---|---|---|")
    for name, picture in pictures.items():
        image = preprocess(picture, config, DETAIL_PRESETS[args.detail])
        outputs, seconds = {}, {}
        for kind, runner in runners.items():
            runner.encode(image.pixel_values, image.grid_thw)  # warm
            t = time.perf_counter()
            outputs[kind] = runner.encode(image.pixel_values, image.grid_thw)
            seconds[kind] = time.perf_counter() - t
        reference, *others = args.formats
        ref = outputs[reference]
        rows = [(reference, "reference", "reference")]
        for kind in others:
            embeds, deepstack = outputs[kind]
            levels = ", ".join(f"{rel_err(deepstack[i], ref[1][i]):.4f}" for i in range(len(deepstack)))
            rows.append((kind, f"{rel_err(embeds, ref[0]):.4f}", levels))
        for kind, embeds_error, levels in rows:
            print(
                f"| {name} {image.resized_size[0]}x{image.resized_size[1]} | {kind} | "
                f"{embeds_error} | {levels} | {seconds[kind]:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
