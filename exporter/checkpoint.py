"""Reading a Hugging Face safetensors checkpoint tensor by tensor, without torch.

Each tensor is read with a plain positioned read (not a memory map, whose touched pages would
count against the process for the whole export) and widened to float32 only when it is asked for,
so the exporter never holds more than the tensor it is converting. bf16 is widened exactly by a
16-bit shift (numpy has no bfloat16).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .errors import CheckpointError
from .tensor_spec import expected_tensors, optional_tensors

_DTYPES = {"BF16": (np.uint16, 2), "F16": (np.float16, 2), "F32": (np.float32, 4)}
_MAX_HEADER = 100 * 1024 * 1024
_FINITE_BLOCK = 1 << 22  # elements checked at once: a 4 MB temporary


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def _read_header(path: Path) -> dict[str, TensorEntry]:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path.name} has a corrupt safetensors header (length {n})")
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path.name} has a corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} has a corrupt safetensors header")
    base = 8 + n
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: tensor '{name}' has a corrupt header entry") from None
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path.name}: tensor '{name}' has dtype {dtype}; expected BF16, F16 or F32")
        itemsize = _DTYPES[dtype][1]
        if end - begin != itemsize * int(np.prod(shape, dtype=np.int64)) or begin < 0 or base + end > size:
            raise CheckpointError(f"{path.name}: tensor '{name}' points outside the file (truncated download?)")
        entries[name] = TensorEntry(path, dtype, shape, base + begin, end - begin)
    return entries


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"model.safetensors.index.json is unreadable: {exc}") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"weight shards missing from {folder}: {', '.join(missing)}")
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise CheckpointError(f"no *.safetensors weights in {folder}")
    return found


def _forget_cached(fd: int, offset: int, length: int) -> None:
    """Tell the OS these checkpoint bytes will not be read again (see Checkpoint.forget_after_read)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # advice only


def _check_finite(name: str, values: np.ndarray) -> None:
    """A NaN or Inf weight poisons every answer (the model then emits one token over and over), so it
    is refused here as each tensor passes; in blocks, so the temporary stays small. Measured: 0.07 s
    per GB of float32, about 1 s of a 100 s export of the 4B model."""
    flat = values.reshape(-1)
    for begin in range(0, flat.size, _FINITE_BLOCK):
        finite = np.isfinite(flat[begin : begin + _FINITE_BLOCK])
        if not finite.all():
            first = np.unravel_index(begin + int(np.argmin(finite)), values.shape)
            bad = int(flat.size - np.isfinite(flat).sum())
            raise CheckpointError(
                f"tensor '{name}' holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (the first at "
                f"{[int(i) for i in first]}): the checkpoint is damaged. Download or save it again."
            )


class Checkpoint:
    """All tensors of one checkpoint folder, checked against the config before any use."""

    def __init__(self, folder: Path, config: ModelConfig):
        self.folder = Path(folder)
        self.config = config
        self.entries: dict[str, TensorEntry] = {}
        # An export reads ~9 GB once; left in the page cache, those bytes push out what is worth
        # keeping there, such as the artifacts just written (the first start after a conversion
        # then read them from disk again: 9.0 s instead of 4.6 s) and other programs' files.
        # The exporter turns this off while a later graph will read the same tensors again.
        self.forget_after_read = True
        for f in _weight_files(self.folder):
            for name, entry in _read_header(f).items():
                if name in self.entries:
                    raise CheckpointError(f"tensor '{name}' appears in two weight files")
                self.entries[name] = entry
        self.validate()

    def validate(self) -> None:
        """Every expected tensor present with its shape; nothing unexpected."""
        expected = expected_tensors(self.config)
        optional = optional_tensors(self.config)
        missing = sorted(set(expected) - set(self.entries))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CheckpointError(f"checkpoint is missing tensor '{missing[0]}'{more}")
        unexpected = sorted(set(self.entries) - set(expected) - set(optional))
        if unexpected:
            more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            raise CheckpointError(
                f"checkpoint has unexpected tensor '{unexpected[0]}'{more}; is it really this architecture?"
            )
        for name, shape in {**expected, **{k: v for k, v in optional.items() if k in self.entries}}.items():
            if self.entries[name].shape != shape:
                raise CheckpointError(
                    f"tensor '{name}' has shape {list(self.entries[name].shape)}, config.json implies {list(shape)}"
                )

    def _raw(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        np_dtype = _DTYPES[entry.dtype][0]
        try:
            with open(entry.file, "rb") as fh:
                raw = np.fromfile(
                    fh, dtype=np_dtype, count=entry.nbytes // np.dtype(np_dtype).itemsize, offset=entry.start
                )
                if self.forget_after_read:
                    _forget_cached(fh.fileno(), entry.start, entry.nbytes)
        except OSError as exc:
            raise CheckpointError(f"cannot read tensor '{name}' from {entry.file.name}: {exc}") from None
        return raw.reshape(entry.shape)

    def get(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array, refused if it holds NaN or Inf."""
        if name not in self.entries:
            raise CheckpointError(f"checkpoint is missing tensor '{name}'")
        raw = self._raw(name)
        if self.entries[name].dtype == "BF16":
            widened = raw.astype(np.uint32)
            del raw
            widened <<= 16
            values = widened.view(np.float32)
        else:
            values = raw.astype(np.float32, copy=False)
        _check_finite(name, values)
        return values
