"""A full-size Qwen3-VL checkpoint with random bf16 weights, in the Hugging Face layout.

The benchmark and the exporter's memory/time proof need a checkpoint of the real size, and speed
does not depend on weight values, so there is no need to download 8.9 GB. Tensor names and shapes
come from `exporter.tensor_spec`, so the file is exactly what the exporter expects of a download.

Drawing 4.4 G normal numbers would take minutes on two cores; instead a few pools of bf16 bit
patterns (one per kind of tensor: matrices, biases, norm weights) are drawn once, and each tensor
is written as a run of slices of its pool at random offsets. Nothing is computed per tensor, the
model is never held in memory, and the run is as fast as the disk.

    python -m bench.make_random_checkpoint OUT_DIR [--seed N] [--side-files DIR] [--config PATH] [--force]

The config, tokenizer and chat template are the real checkpoint's (`bench.side_files`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.config import ModelConfig, read_config_file
from exporter.errors import CheckpointError, UnsupportedModelError
from exporter.tensor_spec import TEXT, expected_tensors

from .side_files import SIDE_FILES, SideFilesError, side_files_folder
from .tokenizer_json import TokenizerBuildError, write_tokenizer_json

MAX_SHARD_BYTES = 5 * 10**9  # the "5GB" shard limit save_pretrained uses for the real checkpoint
BF16_BYTES = 2
CHUNK_ELEMENTS = 4 * 1024 * 1024  # 8 MB per write call
DISK_MARGIN_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Magnitude:
    """Values of one kind of tensor are drawn from N(mean, std) and rounded to bf16."""

    mean: float
    std: float
    pool_elements: int


# Like a trained model: matrices N(0, 0.02) (the config's initializer_range), norm weights near 1,
# small biases. The matrix pool is the big one: it feeds 99.9 % of the bytes.
MATRIX = Magnitude(0.0, 0.02, 16 * 1024 * 1024)
NORM = Magnitude(1.0, 0.1, 1024 * 1024)
BIAS = Magnitude(0.0, 0.01, 1024 * 1024)


def magnitude_of(name: str) -> Magnitude:
    """Which kind of values the tensor called `name` holds."""
    if name.endswith(".bias"):
        return BIAS
    if "norm" in name.split(".")[-2]:  # norm1, norm2, input_layernorm, q_norm, merger .norm, ...
        return NORM
    return MATRIX


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns as little-endian uint16, rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype("<u2")


def make_pool(magnitude: Magnitude, rng: np.random.Generator) -> np.ndarray:
    """`pool_elements` bf16 values of the given magnitude, drawn in slices to keep memory low."""
    pool = np.empty(magnitude.pool_elements, dtype="<u2")
    step = 1024 * 1024
    for start in range(0, magnitude.pool_elements, step):
        n = min(step, magnitude.pool_elements - start)
        z = rng.standard_normal(n, dtype=np.float32)
        pool[start : start + n] = bf16_bits(magnitude.mean + magnitude.std * z)
    return pool


@dataclass(frozen=True)
class Shard:
    file_name: str
    tensors: dict[str, tuple[int, ...]]

    @property
    def nbytes(self) -> int:
        return sum(tensor_bytes(s) for s in self.tensors.values())


def tensor_bytes(shape: tuple[int, ...]) -> int:
    return BF16_BYTES * int(np.prod(shape, dtype=np.int64))


def save_order(tensors: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The order the real checkpoint was sharded in: the language model, then the vision tower.

    With it, the 5 GB split below reproduces the real files: 231 + 482 tensors, shard 1 exactly
    4967229296 bytes (as published in the Hub's LFS pointer)."""
    return dict(sorted(tensors.items(), key=lambda item: not item[0].startswith(TEXT + ".")))


def plan_shards(tensors: dict[str, tuple[int, ...]], max_shard_bytes: int) -> list[Shard]:
    """Greedy split in order, like save_pretrained: a new shard when the next tensor would not fit.
    Within a shard the data is ordered by name, as the safetensors library writes it."""
    groups: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, shape in save_order(tensors).items():
        nbytes = tensor_bytes(shape)
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = shape
        size += nbytes
    groups = [dict(sorted(g.items())) for g in groups]
    n = len(groups)
    if n == 1:
        return [Shard("model.safetensors", groups[0])]
    return [Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups)]


def safetensors_header(tensors: dict[str, tuple[int, ...]]) -> bytes:
    """Length prefix + JSON header (padded with spaces to a multiple of 8) for BF16 tensors
    stored back to back in the given order."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        end = offset + tensor_bytes(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class RandomWeights:
    """Fills tensors from per-kind bf16 pools at seeded random offsets."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.pools = {m: make_pool(m, self.rng) for m in (MATRIX, NORM, BIAS)}

    def write(self, fh, name: str, shape: tuple[int, ...]) -> None:
        pool = self.pools[magnitude_of(name)]
        remaining = int(np.prod(shape, dtype=np.int64))
        while remaining:
            n = min(remaining, CHUNK_ELEMENTS, len(pool))
            start = int(self.rng.integers(0, len(pool) - n + 1))
            fh.write(memoryview(pool[start : start + n]).cast("B"))
            remaining -= n


def write_shard(folder: Path, shard: Shard, weights: RandomWeights) -> None:
    """Write to a .partial name first, so an interrupted run never leaves a complete-looking shard."""
    final = folder / shard.file_name
    partial = final.with_name(final.name + ".partial")
    with partial.open("wb") as fh:
        fh.write(safetensors_header(shard.tensors))
        for name, shape in shard.tensors.items():
            weights.write(fh, name, shape)
    os.replace(partial, final)


def write_index(folder: Path, shards: list[Shard]) -> None:
    if len(shards) == 1:
        return  # a single model.safetensors needs no index, as on the Hub
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in shards)},
        "weight_map": {name: s.file_name for s in shards for name in s.tensors},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def read_config(path: Path) -> ModelConfig:
    return read_config_file(path)[0]


def prepare_folder(out_dir: Path, force: bool) -> None:
    """Create `out_dir`; refuse a non-empty one unless forced, then drop its old weights."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise FileExistsError(f"{out_dir} is not empty; pass --force to overwrite it")
        for old in [
            *out_dir.glob("*.safetensors"),
            *out_dir.glob("*.safetensors.partial"),
            *out_dir.glob("model.safetensors.index.json"),
        ]:
            old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def check_free_space(out_dir: Path, needed: int) -> None:
    free = shutil.disk_usage(out_dir).free
    if free < needed + DISK_MARGIN_BYTES:
        raise OSError(
            f"{out_dir} has {free / 1e9:.2f} GB free; the checkpoint needs {(needed + DISK_MARGIN_BYTES) / 1e9:.2f} GB"
        )


def copy_side_files(out_dir: Path, side_files: Path, config_path: Path) -> None:
    for name in SIDE_FILES:
        if name != "config.json":
            shutil.copyfile(side_files / name, out_dir / name)
    shutil.copyfile(config_path, out_dir / "config.json")
    write_tokenizer_json(out_dir)


@dataclass(frozen=True)
class GenerationResult:
    folder: Path
    shards: list[str]
    total_bytes: int
    seconds: float


def make_random_checkpoint(
    out_dir: Path,
    *,
    side_files: Path,
    seed: int = 0,
    config_path: Path | None = None,
    force: bool = False,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    log=print,
) -> GenerationResult:
    """Write a checkpoint with random weights into `out_dir`: shapes from `config_path` (default: the
    side files' config.json), the other small files from `side_files`."""
    start = time.perf_counter()
    out_dir, side_files = Path(out_dir), Path(side_files)
    config_path = Path(config_path) if config_path is not None else side_files / "config.json"
    cfg = read_config(config_path)
    shards = plan_shards(expected_tensors(cfg), max_shard_bytes)
    total = sum(s.nbytes for s in shards)
    prepare_folder(out_dir, force)
    check_free_space(out_dir, total)
    log(f"writing {total / 1e9:.2f} GB in {len(shards)} shard(s) to {out_dir} (seed {seed})")
    copy_side_files(out_dir, side_files, config_path)
    weights = RandomWeights(seed)
    done = 0
    for i, shard in enumerate(shards, 1):
        write_shard(out_dir, shard, weights)
        done += shard.nbytes
        log(
            f"  [{i}/{len(shards)}] {shard.file_name}: {shard.nbytes / 1e9:.2f} GB, "
            f"{len(shard.tensors)} tensors ({done / total:.0%}, {time.perf_counter() - start:.1f} s)"
        )
    write_index(out_dir, shards)
    seconds = time.perf_counter() - start
    log(f"done: {total / 1e9:.2f} GB ({total} bytes) in {seconds:.1f} s")
    return GenerationResult(out_dir, [s.file_name for s in shards], total, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.make_random_checkpoint", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--side-files",
        type=Path,
        help="folder with the real checkpoint's config, tokenizer and template files (default: from the Hub)",
    )
    parser.add_argument("--config", type=Path, help="config.json to follow instead of the side files' one")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty folder")
    args = parser.parse_args(argv)
    try:
        side_files = side_files_folder(args.side_files, need_config=args.config is None)
        make_random_checkpoint(
            args.out_dir, side_files=side_files, seed=args.seed, config_path=args.config, force=args.force
        )
    except (CheckpointError, UnsupportedModelError, TokenizerBuildError, SideFilesError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
