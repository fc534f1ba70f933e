"""`python -m exporter` end to end on a tiny checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.manifest import Manifest, SourceSection

ROOT = Path(__file__).resolve().parents[2]


def test_cli_exports_and_prints_a_summary(tiny_checkpoint, tmp_path):
    out = tmp_path / "artifacts"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", str(tiny_checkpoint[0]), str(out), "--precision", "fp32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[decoder]" in proc.stdout and "total" in proc.stdout
    assert Manifest.load(out).precision == "fp32"


def test_cli_reports_a_bad_source_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", str(tmp_path / "nope" / "x"), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_downloads_a_hub_id_then_exports(tiny_checkpoint, tmp_path, monkeypatch):
    """SOURCE as a Hub id: only the needed files come from the (local, fake) Hub, then the export."""
    from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

    repo = "iris-test/tiny-qwen3vl"
    with FakeHub(tiny_checkpoint[0], repo) as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")
        out = tmp_path / "artifacts"
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", repo, str(out), "--precision", "fp32"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    manifest = Manifest.load(out)
    assert manifest.source.kind == "hub" and manifest.source.repo_id == repo
    assert len(manifest.source.commit) == 40
    # the same bytes as converting the folder directly
    local = tmp_path / "local"
    subprocess.run(
        [sys.executable, "-m", "exporter", str(tiny_checkpoint[0]), str(local), "--precision", "fp32"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert manifest.files["decoder.onnx.data"] == Manifest.load(local).files["decoder.onnx.data"]


def test_cli_downloads_a_hub_id_at_a_revision(tiny_checkpoint, tmp_path, monkeypatch):
    """`repo@revision`, as the README documents it: the revision is fetched and recorded."""
    from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

    repo = "iris-test/tiny-qwen3vl"
    with FakeHub(tiny_checkpoint[0], repo) as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")
        out = tmp_path / "artifacts"
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", f"{repo}@{hub.commit_sha}", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        source = Manifest.load(out).source
        assert source == SourceSection("hub", repo_id=repo, revision=hub.commit_sha, commit=hub.commit_sha)
        assert any(f"/revision/{hub.commit_sha}" in r.path for r in hub.requests)

        missing = subprocess.run(
            [sys.executable, "-m", "exporter", f"{repo}@v9", str(tmp_path / "other")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{repo} has no revision 'v9'" in missing.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("source", ["./nope/x", "{tmp}/nope/x", "~/iris-no-such-folder/x", "here/x"])
def test_cli_says_a_missing_folder_does_not_exist(source, tmp_path):
    """A path that leads nowhere is named as a missing folder, never sent to the Hub ('here' exists,
    so 'here/x' is a path too)."""
    (tmp_path / "here").mkdir()
    source = source.format(tmp=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", source, str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    missing = tmp_path / Path(source).expanduser()  # relative ones are named in full
    assert proc.stderr.strip() == f"error: There is no folder {missing}. Check the path of the checkpoint folder."
    assert "Downloading" not in proc.stdout and not (tmp_path / "out").exists()


def test_cli_a_source_that_may_be_a_hub_id_or_a_folder_names_both(tmp_path):
    """'nope/x' is a valid Hub id and a relative path: when the Hub cannot help, say there is no such
    folder either."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "nope/x", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Cannot reach the Hugging Face Hub" in proc.stderr
    assert proc.stderr.strip().endswith(f"(If you meant a folder: there is no folder {tmp_path / 'nope' / 'x'}.)")
