"""The same checkpoint gives the same artifacts, to the byte, whatever CPU exports it.

People export on one machine and copy the folder to another, and the bundle's exporter is checked
byte for byte against the source one. Kernels differ by CPU (numpy's float32 power took another
SIMD routine with AVX-512 than with AVX2 and changed the RoPE table's last bits), so the export
runs again as an AVX2-only CPU (bench.as_avx2) and is compared with this CPU's.
"""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import as_avx2
from exporter.graph.ops import rope_inverse_frequencies

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("theta", "dim"), [(5_000_000.0, 128), (10_000.0, 32), (1_000_000.0, 64)])
def test_rope_frequencies_are_correctly_rounded(theta, dim):
    """Within half a float32 step of the float64 value: the one result every CPU agrees on."""
    exact = np.array([theta ** -(i / dim) for i in range(0, dim, 2)], np.float64)
    got = rope_inverse_frequencies(theta, dim)
    assert got.dtype == np.float32 and got.shape == (dim // 2,)
    assert np.all(np.abs(got.astype(np.float64) - exact) <= np.spacing(got).astype(np.float64) / 2)


@pytest.mark.skipif(as_avx2.unavailable_reason() is not None, reason=str(as_avx2.unavailable_reason()))
def test_an_avx2_only_cpu_exports_the_same_bytes(tiny_checkpoint, tiny_int4, tmp_path):
    out = tmp_path / "int4-on-avx2"
    proc = as_avx2.run(
        [sys.executable, "-m", "exporter", str(tiny_checkpoint[0]), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in tiny_int4.iterdir() if p.name not in ("manifest.json", ".verified.json"))
    assert files and sorted(p.name for p in out.iterdir() if p.name in files) == files
    _, mismatch, errors = filecmp.cmpfiles(out, tiny_int4, files, shallow=False)
    assert mismatch == [] and errors == []
