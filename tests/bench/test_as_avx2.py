"""bench.as_avx2 runs a command as on an AVX2-only CPU, natively: the kernels it gets, what the
process reads of its CPU, and that crashes and exit codes still come through.

Ground truth for the kernels: AVX2's VPMADDUBSW (emulated in numpy by tests/exporter/test_int8_exact.py),
whose saturating pair sums no CPU with VNNI or AMX computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import as_avx2
from engine.cpu import parse_proc_cpuinfo
from tests.exporter.test_int8_exact import full_range_results, rel_diff

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(as_avx2.unavailable_reason() is not None, reason=str(as_avx2.unavailable_reason()))


def run_masked(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return as_avx2.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs)


def test_onnxruntime_runs_its_saturating_avx2_int8_kernel(tmp_path):
    """The child's int8 matmul on full-range weights equals VPMADDUBSW's saturated sums, which
    differ from the exact sums by 2 % of scale on these inputs: it ran the AVX2 kernel, whatever
    this machine's CPU is (here, in-process, VNNI or AMX give the exact sums)."""
    out = tmp_path / "kernels.npz"
    proc = run_masked("-m", "tests.fixtures.int8_kernels", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)["matmul_full_range"]
    saturated, exact = full_range_results()
    assert rel_diff(saturated, exact) > 0.01  # the control: these inputs do saturate
    assert rel_diff(got, saturated) < 1e-5
    assert rel_diff(got, exact) > 0.01


def test_the_process_reads_an_avx2_only_cpu_everywhere():
    """/proc/cpuinfo (what engine.cpu reads), numpy's CPUID-based dispatch and the engine's CPU
    class agree: AVX2 and FMA, no AVX-512, VNNI or AMX; the rest of the CPU is this one."""
    script = (
        "import json, numpy\n"
        "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
        "from engine.cpu import cpu_info\n"
        "from bench.as_avx2 import masked_here\n"
        "info = cpu_info()\n"
        "print(json.dumps({'numpy': {k: f[k] for k in ('AVX2', 'FMA3', 'AVX512F', 'AVX512_SKX')},"
        " 'masked': masked_here(), 'cls': info.cpu_class, 'model': info.model,"
        " 'text': open('/proc/cpuinfo').read()}))\n"
    )
    proc = run_masked("-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["numpy"] == {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512_SKX": False}
    assert seen["cls"] == "x86-avx2" and seen["masked"]  # and bench.run says so beside its figures
    masked = parse_proc_cpuinfo(seen["text"], "x86_64")
    real = parse_proc_cpuinfo(Path("/proc/cpuinfo").read_text(), "x86_64")
    assert masked.model == real.model == seen["model"] and masked.has("avx2") and masked.has("fma")
    for flag in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"):
        assert not masked.has(flag), flag


def test_a_crash_is_still_reported_and_exit_codes_pass_through():
    """Faults other than CPUID reach Python's faulthandler and kill the process as before."""
    crash = run_masked("-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)")
    assert crash.returncode == -11 and "Fatal Python error: Segmentation fault" in crash.stderr
    assert run_masked("-c", "raise SystemExit(7)").returncode == 7


def test_the_command_line_runs_the_command_after_the_separator(tmp_path):
    marker = tmp_path / "ran"
    code = as_avx2.main(["--", sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"])
    assert code == 0 and marker.read_text() == "x"
