"""bench.matmul_formats on a small shape: every candidate runs and the AVX2 emulation has teeth."""

from __future__ import annotations

from bench.matmul_formats import main, measure


def test_every_format_runs_and_full_range_int8_would_saturate_on_avx2():
    rows = {r["format"]: r for r in measure(32, 256, 256, threads=1, repeats=1)}
    assert rows["fp32 MatMul"]["error"] < 1e-5
    seven = rows["int8 7-bit [-63, 63] (DynamicQuantizeMatMul; default)"]
    full = rows["int8 full range [-127, 127] (DynamicQuantizeMatMul)"]
    # Both CPU families, emulated, so this holds on any CPU: 7 bits never saturate; full range does
    # on AVX2. This CPU computes one of the two.
    assert abs(seven["avx2_error_sample"] - seven["vnni_error_sample"]) < 1e-9
    assert full["avx2_error_sample"] > 3 * full["vnni_error_sample"]
    for row in (seven, full):
        this_cpu = row["error_sample"]
        assert min(abs(this_cpu - row[f"{cpu}_error_sample"]) for cpu in ("avx2", "vnni")) < 1e-3 * this_cpu
    assert all(0 < r["ms"] and r["error"] < 0.2 for r in rows.values())


def test_the_command_prints_a_table_naming_the_cpu(capsys):
    assert main(["--shape", "16", "128", "128", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "| MatMulNBits 4-bit, block 128 |" in out
