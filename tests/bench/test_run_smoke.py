"""The benchmark script runs end to end (on the tiny checkpoint; the real run is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_script_smoke(tiny_checkpoint, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--checkpoint",
            str(tiny_checkpoint[0]),
            "--workdir",
            str(tmp_path),
            "--decode-tokens",
            "8",
            "--context",
            "1024",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    engine = result["engine"]
    assert engine["image_tokens_448"] == 196 and engine["image_tokens_896"] == 784
    assert engine["decode_tokens"] == 8 and engine["decode_tok_s"] > 0
    assert engine["followup_prompt_tokens"] < engine["prompt_tokens_448"]
    assert result["export"]["peak_rss_mb"] > 0 and result["machine"]["onnxruntime"]
    assert engine["first_load_s"] > 0 and engine["load_s"] > 0
    # the long-context phase has its own peak, at most the whole run's and at least what it started with
    assert engine["rss_before_long_context_mb"] <= engine["peak_rss_long_context_mb"] <= engine["peak_rss_mb"]
    assert "| decode speed |" in (tmp_path / "result.md").read_text()
