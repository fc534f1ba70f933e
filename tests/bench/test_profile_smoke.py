"""The profiling script runs on the tiny model and attributes time to the right kinds of runs."""
from __future__ import annotations

from bench.profile import main


def test_profile_groups_runs_and_names_the_operators(tiny_int4, tmp_path, capsys):
    out = tmp_path / "profile.md"
    assert main([str(tiny_int4), "--context", "1024", "--out", str(out)]) == 0
    text = out.read_text()
    for scenario in ("448x448 image", "896x896 image", "filling 1024 tokens"):
        assert scenario in text
    # 16 answer tokens: the first comes from the prompt run, 15 from decode steps
    assert "decode: 15 run(s)" in text
    assert "vision: 1 run(s)" in text
    assert "| MatMulNBits |" in text and "| GroupQueryAttention |" in text and "| MultiHeadAttention |" in text
