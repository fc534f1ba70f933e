"""`python -m exporter` end to end on a tiny checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_exports_and_prints_a_summary(tiny_checkpoint, tmp_path):
    out = tmp_path / "artifacts"
    proc = subprocess.run([sys.executable, "-m", "exporter", str(tiny_checkpoint[0]), str(out), "--precision", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[decoder]" in proc.stdout and "total" in proc.stdout
    assert json.loads((out / "manifest.json").read_text())["precision"] == "fp32"


def test_cli_reports_a_bad_source_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "exporter", str(tmp_path / "nope" / "x"), str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
