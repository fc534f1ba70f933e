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


def test_cli_downloads_a_hub_id_then_exports(tiny_checkpoint, tmp_path, monkeypatch):
    """SOURCE as a Hub id: only the needed files come from the (local, fake) Hub, then the export."""
    from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

    repo = "iris-test/tiny-qwen3vl"
    with FakeHub(tiny_checkpoint[0], repo) as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")
        out = tmp_path / "artifacts"
        proc = subprocess.run([sys.executable, "-m", "exporter", repo, str(out), "--precision", "fp32"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "hub" and manifest["source"]["repo_id"] == repo
    assert len(manifest["source"]["commit"]) == 40
    # the same bytes as converting the folder directly
    local = tmp_path / "local"
    subprocess.run([sys.executable, "-m", "exporter", str(tiny_checkpoint[0]), str(local), "--precision", "fp32"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    local_files = json.loads((local / "manifest.json").read_text())["files"]
    assert manifest["files"]["decoder.onnx.data"] == local_files["decoder.onnx.data"]
