"""The choose page: sizes and free space before anything is written, and every refusal explained."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.fixtures.fake_hub import point_huggingface_hub_at
from tests.ui_wizard import (
    REPO,
    choose_download,
    choose_folder,
    click,
    make_wizard,
    next_button,
    type_into,
    wait_next_enabled,
)
from ui.wizard import needs_setup
from ui.wizard.choice import PageId

REAL_DISK_USAGE = shutil.disk_usage


def fake_free_space(monkeypatch, tmp_path: Path, free: int) -> None:
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real._replace(free=free))


def test_shows_download_size_converted_size_and_free_space(qtbot, hub, tiny_checkpoint, tmp_path, monkeypatch):
    fake_free_space(monkeypatch, tmp_path, 123_456_000_000)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, wizard)

    total = sum(f.stat().st_size for f in tiny_checkpoint[0].iterdir())  # every file of it is needed
    summary = wizard.choose_page.summary_label.text()
    assert f"Download: {total / 1e6:.1f} MB" in summary
    assert "Converted model: about" in summary
    assert "Free space: 123.5 GB" in summary
    assert wizard.choose_page.nextId() == PageId.DOWNLOAD


def test_too_little_space_refuses_before_anything_is_written(qtbot, hub, tmp_path, monkeypatch):
    fake_free_space(monkeypatch, tmp_path, 1_000)
    wizard = make_wizard(qtbot, tmp_path / "model")
    type_into(qtbot, wizard.choose_page.repo_edit, REPO)
    page = wizard.choose_page
    qtbot.waitUntil(lambda: page.problem_label.isVisible(), timeout=10_000)

    assert "Not enough free disk space" in page.problem_label.text()
    assert "only 1.0 kB is free" in page.problem_label.text()
    assert not next_button(wizard).isEnabled()
    assert not (tmp_path / "model").exists()
    assert not list((tmp_path / "hf_home").rglob("blobs/*")), "nothing may be downloaded yet"
    assert [r for r in hub.requests if "/resolve/" in r.path and r.path.endswith(".safetensors")] == []

    monkeypatch.setattr(shutil, "disk_usage", REAL_DISK_USAGE)  # the user freed space
    wait_next_enabled(qtbot, wizard, timeout=10_000)  # the page looks again by itself once space is freed
    assert not page.problem_label.isVisible()


def test_next_looks_at_the_free_space_again(qtbot, hub, tmp_path, monkeypatch):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, wizard)
    fake_free_space(monkeypatch, tmp_path, 1_000)  # the disk filled up since the page last looked
    click(qtbot, next_button(wizard))
    assert wizard.currentId() == PageId.CHOOSE
    assert "Not enough free disk space" in wizard.choose_page.problem_label.text()
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.body_requests()}
    assert fetched == {"config.json"}, "only the config was read (into memory), for the size estimate"
    assert not list((tmp_path / "hf_home").rglob("blobs/*"))


@pytest.mark.parametrize(
    ("repo", "message"),
    [
        ("not a model id", "is not a Hugging Face model id"),
        ("iris-test/nope", "No model named 'iris-test/nope'"),
        (f"{REPO}@v9", "has no revision 'v9'"),
    ],
)
def test_unknown_models_are_explained(qtbot, hub, tmp_path, repo, message):
    wizard = make_wizard(qtbot, tmp_path / "model")
    type_into(qtbot, wizard.choose_page.repo_edit, repo)
    qtbot.waitUntil(lambda: message in wizard.choose_page.problem_label.text(), timeout=10_000)
    assert not next_button(wizard).isEnabled()


def test_offline_is_explained_and_check_again_recovers(qtbot, hub, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    point_huggingface_hub_at(monkeypatch, f"http://127.0.0.1:{closed_port}", tmp_path / "hf_home")
    wizard = make_wizard(qtbot, tmp_path / "model")
    page = wizard.choose_page
    type_into(qtbot, page.repo_edit, REPO)
    qtbot.waitUntil(lambda: "Cannot reach the Hugging Face Hub" in page.problem_label.text(), timeout=10_000)
    assert not next_button(wizard).isEnabled()

    point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")  # back online
    click(qtbot, page.check_again_button)
    wait_next_enabled(qtbot, wizard)
    assert not page.check_again_button.isVisible()


def test_a_target_holding_other_files_is_refused(qtbot, hub, tmp_path):
    target = tmp_path / "documents"
    target.mkdir()
    (target / "thesis.odt").write_text("precious")
    wizard = make_wizard(qtbot, tmp_path / "model")
    type_into(qtbot, wizard.choose_page.target_edit, str(target))
    type_into(qtbot, wizard.choose_page.repo_edit, REPO)
    qtbot.waitUntil(lambda: "already holds other files" in wizard.choose_page.problem_label.text(), timeout=10_000)
    assert not next_button(wizard).isEnabled()
    assert [p.name for p in target.iterdir()] == ["thesis.odt"]


def test_folders_that_hold_no_model_are_explained(qtbot, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    page = wizard.choose_page
    choose_folder(qtbot, wizard, tmp_path / "nowhere")
    assert "There is no folder at" in page.problem_label.text()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(b"not really")
    type_into(qtbot, page.folder_edit, str(photos))
    assert "neither an Iris model (manifest.json) nor a Hugging Face checkpoint" in page.problem_label.text()
    assert not next_button(wizard).isEnabled()


def test_a_checkpoint_folder_leads_to_conversion(qtbot, tiny_checkpoint, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    page = wizard.choose_page
    assert "A Hugging Face checkpoint of Qwen3-VL (4 layers, hidden size 64)" in page.summary_label.text()
    assert "Converted model: about" in page.summary_label.text()
    assert next_button(wizard).isEnabled() and page.nextId() == PageId.CONVERT


def test_an_hf_cache_repo_folder_means_its_snapshot(qtbot, tiny_checkpoint, tmp_path):
    repo_folder = tmp_path / "models--Qwen--Qwen3-VL-4B-Instruct"
    snapshot = repo_folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo_folder / "blobs").mkdir()
    for file in tiny_checkpoint[0].iterdir():
        (snapshot / file.name).symlink_to(file)
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, repo_folder)
    assert wizard.choose_page.nextId() == PageId.CONVERT
    click(qtbot, next_button(wizard))
    assert wizard.choice.source_dir == snapshot


def test_an_iris_model_folder_skips_download_and_conversion(qtbot, tiny_int4, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_int4)
    page = wizard.choose_page
    assert "An Iris model (int4" in page.summary_label.text()
    assert page.nextId() == PageId.VERIFY
    assert not page.target_edit.isEnabled(), "the folder is used where it is: no target to choose"


def test_needs_setup(tiny_int4, tmp_path):
    assert needs_setup(tmp_path / "not-there")
    assert needs_setup(tmp_path)
    assert not needs_setup(tiny_int4)


def test_leftovers_of_killed_conversions_beside_the_target_are_removed(qtbot, tiny_checkpoint, tmp_path):
    """A conversion killed mid-way leaves a hidden partial folder (gigabytes, for a real model): the
    page removes it before counting free space; one whose process still runs is left alone."""
    import subprocess
    import sys

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".model.partial-{ended.pid}"
        live = tmp_path / f".model-cli.partial-{running.pid}"
        for folder in (stale, live):
            folder.mkdir()
            (folder / "decoder.onnx.data").write_bytes(b"\0" * 100_000)
        wizard = make_wizard(qtbot, tmp_path / "model")
        choose_folder(qtbot, wizard, tiny_checkpoint[0])
        wait_next_enabled(qtbot, wizard)
        assert not stale.exists()
        assert live.is_dir()
    finally:
        running.kill()
        running.wait()
