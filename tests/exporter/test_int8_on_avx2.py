"""The default export computes the same on an AVX2-only CPU as on this one, checked on the real kernels.

An x86 CPU without VNNI or AMX runs onnxruntime's int8 matmul on VPMADDUBSW, which saturates
pair sums of full-range weights (tests/exporter/test_int8_exact.py emulates that instruction).
Here the kernels themselves run as on such a CPU: a child process runs under QEMU's user-mode
emulator with `-cpu Haswell` (AVX2, FMA, F16C; no AVX-512, VNNI or AMX), so onnxruntime picks its
AVX2 kernels, whatever processor runs the tests. Speed under emulation means nothing; results do.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.exporter.test_int8_exact import full_range_results, rel_diff
from tests.fixtures import int8_kernels

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-x86_64")

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64" or QEMU is None,
    reason="needs QEMU's user-mode emulator (Debian: qemu-user) to run as an AVX2-only x86 CPU",
)


def emulated_env() -> dict[str, str]:
    """This environment without bench.as_avx2's preload (QEMU emulates its own CPU: the preload,
    loaded into the emulated process, finds no CPUID faulting there and stops it)."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "AS_AVX2_DIR")}


@pytest.fixture(scope="module")
def runs(tiny_int4, tmp_path_factory) -> tuple[dict, dict]:
    """(this CPU's results, the AVX2-only CPU's) for the same inputs and the default export."""
    out = tmp_path_factory.mktemp("avx2") / "results.npz"
    proc = subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, "-m", "tests.fixtures.int8_kernels", str(out), str(tiny_int4)],
        cwd=ROOT,
        env=emulated_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int8_kernels.run_all(tiny_int4), dict(np.load(out))


def test_the_emulated_cpu_runs_the_saturating_avx2_kernel(runs):
    """The control: there, full-range weights give exactly what VPMADDUBSW's saturating pair sums
    give, not the exact integer sums (so the child really ran the AVX2 kernel)."""
    _here, avx2 = runs
    saturated, exact = full_range_results()
    assert rel_diff(saturated, exact) > 0.01  # these inputs do saturate
    assert rel_diff(avx2["matmul_full_range"], saturated) < 1e-5
    assert rel_diff(avx2["matmul_full_range"], exact) > 0.01


def test_the_exported_int8_weights_give_the_same_sums_on_avx2(runs):
    here, avx2 = runs
    assert np.array_equal(here["matmul_exported"], avx2["matmul_exported"])


def test_the_default_exports_vision_matches_across_cpus(runs):
    """Embeddings and every DeepStack level agree within a fraction of the int8 error itself (~0.03
    of scale on this model): the integer sums are the same, only float rounding before each
    activation quantization may differ. Full-range weights made the two CPUs differ by 0.08-0.10."""
    here, avx2 = runs
    assert rel_diff(avx2["embeds"], here["embeds"]) < 0.02
    for level in range(here["deepstack"].shape[0]):
        assert rel_diff(avx2["deepstack"][level], here["deepstack"][level]) < 0.02, level
