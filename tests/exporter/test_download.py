"""Download side of the exporter, against a real local HTTP server speaking the Hub protocol.

huggingface_hub itself is not mocked; the fake Hub (tests/fixtures/fake_hub.py) serves a folder.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from exporter import download
from exporter.download import (
    DownloadProgress,
    download_checkpoint,
    plan_download,
    split_hub_id,
)
from exporter.errors import DiskSpaceError, DownloadError, ExportCancelled
from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

REPO = "iris-test/tiny-qwen3vl"
DATA = Path(__file__).resolve().parent.parent / "data" / "qwen3vl"
WEIGHTS = "model.safetensors"
WEIGHTS_SIZE = 3_000_000
# What the brief asks for from this repo: the config, the side files and the safetensors weights.
NEEDED = {
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    WEIGHTS,
}
NOT_NEEDED = {"modeling_qwen3_vl.py", "pytorch_model.bin", "README.md", "original/model.safetensors"}


@pytest.fixture
def source_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "source_repo"
    repo.mkdir()
    for name in NEEDED - {WEIGHTS}:
        shutil.copy(DATA / name, repo / name)
    (repo / WEIGHTS).write_bytes(random.Random(0).randbytes(WEIGHTS_SIZE))
    (repo / "modeling_qwen3_vl.py").write_text("raise SystemExit('remote code must never be downloaded')\n")
    (repo / "pytorch_model.bin").write_bytes(b"pickle" * 1000)
    (repo / "README.md").write_text("# tiny\n")
    (repo / "original").mkdir()
    (repo / "original" / "model.safetensors").write_bytes(b"duplicate weights in a subfolder")
    return repo


@pytest.fixture
def hub(source_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeHub(source_repo, REPO) as fake:
        point_huggingface_hub_at(monkeypatch, fake.url, tmp_path / "hf_home")
        monkeypatch.setattr(download, "RETRY_DELAYS_S", (0.05, 0.05))
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_requests(hub: FakeHub, since: int = 0) -> list:
    """HEADs and GETs of repo files (anything but the model-info API)."""
    return [r for r in hub.requests[since:] if "/api/" not in r.path]


def partial_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "hf_home").rglob("*.incomplete"))


# ---- planning ---------------------------------------------------------------------------------


def test_plan_lists_only_needed_files_with_sizes_and_commit(hub: FakeHub, source_repo: Path) -> None:
    plan = plan_download(REPO)
    assert {f.filename for f in plan.files} == NEEDED
    assert plan.commit_sha == hub.commit_sha
    for f in plan.files:
        assert f.size == (source_repo / f.filename).stat().st_size
    assert plan.total_bytes == sum((source_repo / n).stat().st_size for n in NEEDED)
    assert plan.present_bytes == 0 and plan.missing_bytes == plan.total_bytes


def test_hub_ids_are_told_from_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_hub_id("Qwen/Qwen3-VL-4B-Instruct") == ("Qwen/Qwen3-VL-4B-Instruct", "main")
    assert split_hub_id("Qwen/Qwen3-VL-4B-Instruct@v1.0") == ("Qwen/Qwen3-VL-4B-Instruct", "v1.0")
    for path_like in (
        "",
        "./model",
        "/opt/models/qwen",
        "~/models/qwen",
        r"C:\models\qwen",
        "a/b/c",
        "bad--name/x",
        "qwen",
    ):
        assert split_hub_id(path_like) is None, path_like
    (tmp_path / "Qwen" / "Qwen3-VL-4B-Instruct").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert split_hub_id("Qwen/Qwen3-VL-4B-Instruct") is None, "an existing local folder wins over the Hub"


# ---- full download, progress, cache reuse -----------------------------------------------------


def test_download_fetches_only_needed_files_with_byte_progress(hub: FakeHub, source_repo: Path) -> None:
    hub.throttle(6_000_000)  # ~0.5 s for the weights: several progress events inside the file
    events: list[DownloadProgress] = []
    snapshot = download_checkpoint(REPO, progress=events.append)

    assert {p.name for p in snapshot.iterdir()} == NEEDED
    for name in NEEDED:
        assert sha256(snapshot / name) == sha256(source_repo / name), name
    fetched = {r.path for r in hub.requests}
    for name in NOT_NEEDED:
        assert not any(name in path for path in fetched), name

    total = sum((source_repo / n).stat().st_size for n in NEEDED)
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[-1] == total and all(e.bytes_total == total for e in events)
    inside_weights = [e for e in events if e.current_file == WEIGHTS and 0 < e.bytes_done < total]
    assert len(inside_weights) >= 3
    assert all(e.speed > 0 and e.eta is not None and e.eta > 0 for e in inside_weights)


def test_second_download_reuses_the_cache(hub: FakeHub) -> None:
    first = download_checkpoint(REPO)
    requests_before = len(hub.requests)

    plan = plan_download(REPO)
    assert plan.present_bytes == plan.total_bytes and all(f.cached for f in plan.files)
    events: list[DownloadProgress] = []
    assert download_checkpoint(REPO, progress=events.append) == first
    assert file_requests(hub, since=requests_before) == [], "no file was fetched or even HEADed"
    assert events[-1].bytes_done == events[-1].bytes_total == plan.total_bytes


def test_token_goes_to_the_hub_but_not_to_the_cdn(hub: FakeHub) -> None:
    download_checkpoint(REPO, token="hf_not_a_real_token")
    assert all(r.authorized for r in hub.requests if r.server == "hub")
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and not any(r.authorized for r in cdn)


# ---- dropped connections and resume -----------------------------------------------------------


def test_a_single_drop_is_resumed_in_place(hub: FakeHub, source_repo: Path) -> None:
    hub.drop_connection(WEIGHTS, at_byte=1_000_000, times=1)
    snapshot = download_checkpoint(REPO)
    assert [r.range for r in hub.body_requests(WEIGHTS)] == [None, "bytes=1000000-"]
    assert sha256(snapshot / WEIGHTS) == sha256(source_repo / WEIGHTS)


def test_dead_connection_fails_clearly_then_a_retry_resumes(hub: FakeHub, source_repo: Path, tmp_path) -> None:
    hub.drop_connection(WEIGHTS, at_byte=1_234_567)  # every time: the connection stays dead at that byte
    with pytest.raises(DownloadError, match=r"connection dropped while downloading model\.safetensors.*resume"):
        download_checkpoint(REPO)
    [partial] = partial_files(tmp_path)
    assert partial.stat().st_size == 1_234_567
    assert plan_download(REPO).present_bytes >= 1_234_567

    hub.clear_faults()
    requests_before = len(hub.body_requests(WEIGHTS))
    snapshot = download_checkpoint(REPO)
    assert [r.range for r in hub.body_requests(WEIGHTS)[requests_before:]] == ["bytes=1234567-"]
    assert sha256(snapshot / WEIGHTS) == sha256(source_repo / WEIGHTS)
    assert partial_files(tmp_path) == []


def test_a_damaged_partial_file_is_detected_and_replaced(hub: FakeHub, source_repo: Path, tmp_path) -> None:
    plan = plan_download(REPO)
    weights = next(f for f in plan.files if f.filename == WEIGHTS)
    partial = plan.storage_dir / "blobs" / f"{weights.etag}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 500_000)  # right length to resume from, wrong bytes

    with pytest.raises(DownloadError, match="damaged"):
        download_checkpoint(REPO)
    assert hub.body_requests(WEIGHTS)[-1].range == "bytes=500000-"
    assert not partial.exists()
    snapshot = download_checkpoint(REPO)
    assert hub.body_requests(WEIGHTS)[-1].range is None
    assert sha256(snapshot / WEIGHTS) == sha256(source_repo / WEIGHTS)


# ---- cancel -----------------------------------------------------------------------------------


def test_cancel_stops_within_a_second_and_the_next_call_resumes(hub: FakeHub, source_repo: Path, tmp_path) -> None:
    hub.throttle(1_000_000)  # the weights alone would take 3 s
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def press_cancel() -> None:
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Timer(0.8, press_cancel).start()
    with pytest.raises(ExportCancelled):
        download_checkpoint(REPO, cancel=cancel)
    assert time.monotonic() - cancelled_at[0] < 1.0
    [partial] = partial_files(tmp_path)
    kept = partial.stat().st_size
    etag = partial.name.removesuffix(".incomplete")
    interrupted = next(f for f in plan_download(REPO).files if f.etag == etag)
    assert 0 < kept < interrupted.size

    hub.clear_faults()
    snapshot = download_checkpoint(REPO, cancel=threading.Event())
    assert hub.body_requests(interrupted.filename)[-1].range == f"bytes={kept}-"
    for name in NEEDED:
        assert sha256(snapshot / name) == sha256(source_repo / name), name


# ---- errors with readable messages ------------------------------------------------------------


def test_missing_repo_and_revision(hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match="No model named 'iris-test/nope'"):
        download_checkpoint("iris-test/nope")
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        download_checkpoint(REPO, revision="v9")
    with pytest.raises(DownloadError, match="not a Hugging Face model id"):
        plan_download("not//an id")


def test_repo_without_safetensors_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "pickled_only"
    repo.mkdir()
    shutil.copy(DATA / "config.json", repo / "config.json")
    (repo / "pytorch_model.bin").write_bytes(b"pickle")
    with FakeHub(repo, "iris-test/pickled") as fake:
        point_huggingface_hub_at(monkeypatch, fake.url, tmp_path / "hf_home")
        with pytest.raises(DownloadError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
            download_checkpoint("iris-test/pickled")
        assert file_requests(fake) == []


@pytest.mark.parametrize(
    ("status", "error_code", "expected"),
    [
        (401, "GatedRepo", r"gated model.*accept its license.*access token"),
        (403, "GatedRepo", r"gated model.*accept its license"),
        (401, None, r"401 Unauthorized.*token is missing, invalid or expired"),
        (403, None, r"forbidden \(403\).*accept its license"),
        (500, None, r"server error \(500\).*try again"),
    ],
)
def test_http_errors_on_file_download(hub: FakeHub, tmp_path, status, error_code, expected) -> None:
    hub.fail(status, on="resolve", error_code=error_code, message="Access to this model is restricted")
    with pytest.raises(DownloadError, match=expected):
        download_checkpoint(REPO)
    assert not list((tmp_path / "hf_home").rglob("snapshots/*/*"))


def test_server_error_on_the_api(hub: FakeHub) -> None:
    hub.fail(503, on="api")
    with pytest.raises(DownloadError, match=r"server error \(503\)"):
        download_checkpoint(REPO)


def test_hub_unreachable(source_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    point_huggingface_hub_at(monkeypatch, f"http://127.0.0.1:{closed_port}", tmp_path / "hf_home")
    with pytest.raises(DownloadError, match="Cannot reach the Hugging Face Hub"):
        download_checkpoint(REPO)


# ---- disk space -------------------------------------------------------------------------------


def test_not_enough_disk_space_fails_before_any_byte(hub: FakeHub, tmp_path, monkeypatch) -> None:
    real_usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage._replace(free=1_000))
    with pytest.raises(DiskSpaceError, match=r"the rest of the download needs \d+\.\d MB, only 1\.0 kB is free"):
        download_checkpoint(REPO)
    assert file_requests(hub) == []
    assert not list((tmp_path / "hf_home").rglob("blobs/*"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to make writes fail with ENOSPC")
def test_disk_full_while_writing(hub: FakeHub) -> None:
    plan = plan_download(REPO)
    weights = next(f for f in plan.files if f.filename == WEIGHTS)
    partial = plan.storage_dir / "blobs" / f"{weights.etag}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.symlink_to("/dev/full")  # every write into the partial file fails with ENOSPC
    with pytest.raises(DiskSpaceError, match="disk is full.*model.safetensors"):
        download_checkpoint(REPO)
