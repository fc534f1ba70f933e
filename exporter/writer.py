"""Streaming external-data writer: each initializer goes to disk as soon as it is made.

Tensors are appended to one `<graph>.onnx.data` file at 4 KiB-aligned offsets (so onnxruntime can
memory-map them) and only a TensorProto that points at them stays in memory. Two initializers may
point at the same bytes with different shapes: that is how the tied embedding is stored once and
used both by the embedding lookup and by the lm_head.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

_ALIGN = 4096
_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int8): TensorProto.INT8,
}
_INLINE_LIMIT = 1024  # small tensors (shapes, scalars) stay inside the .onnx file


class ExternalDataWriter:
    def __init__(self, data_path: Path):
        self.path = Path(data_path)
        self._fh = self.path.open("wb")
        self.offset = 0
        self.sha256 = hashlib.sha256()  # hashed as written: no second pass over gigabytes

    def _write(self, data) -> None:
        self._fh.write(data)
        self.sha256.update(data)

    def tensor(self, name: str, array: np.ndarray) -> TensorProto:
        """Write `array` and return an initializer that refers to it."""
        array = np.asarray(array)
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)  # (keeps 0-d arrays 0-d only on this branch)
        dtype = _NP_TO_ONNX[array.dtype]
        if array.nbytes <= _INLINE_LIMIT:
            return helper.make_tensor(name, dtype, array.shape, array.tobytes(), raw=True)
        pad = (-self.offset) % _ALIGN
        if pad:
            self._write(b"\0" * pad)
            self.offset += pad
        start = self.offset
        self._write(memoryview(array).cast("B"))
        self.offset += array.nbytes
        return self._external(name, dtype, array.shape, start, array.nbytes)

    def alias(self, name: str, of: TensorProto, shape: tuple[int, ...]) -> TensorProto:
        """Another view (same bytes, other shape) of an already written tensor."""
        info = {e.key: e.value for e in of.external_data}
        return self._external(name, of.data_type, shape, int(info["offset"]), int(info["length"]))

    def _external(self, name, dtype, shape, offset, length) -> TensorProto:
        t = TensorProto()
        t.name = name
        t.data_type = dtype
        t.dims.extend(int(d) for d in shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.flush()
            finally:  # a failed flush (disk full) still closes the file, so its folder can be removed
                self._fh.close()

    def __enter__(self) -> ExternalDataWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Always close (a failed export removes the folder, which Windows refuses while files are
        open); after a failure the first error is what counts, not a second one from the flush."""
        try:
            self.close()  # a failed flush still closes the file
        except OSError:
            if exc is None:
                raise
