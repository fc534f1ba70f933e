"""The download page against a real local HTTP 'Hub': progress, cancel + resume, errors + Retry."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time

import pytest
from PySide6.QtWidgets import QWizard

from engine.manifest import Manifest, SourceSection
from tests.ui_wizard import (
    WAIT_MS,
    WEIGHTS,
    choose_download,
    click,
    make_wizard,
    next_button,
    partial_files,
    wait_failed,
    wait_page,
)
from ui.wizard.choice import PageId

REAL_DISK_USAGE = shutil.disk_usage


def start_download(qtbot, wizard) -> None:
    choose_download(qtbot, wizard)
    click(qtbot, next_button(wizard))
    assert wizard.currentId() == PageId.DOWNLOAD


def download_under_way(qtbot, hub, tmp_path):
    """A wizard whose (throttled) download is past 5 MB into the weights: (wizard, page, task)."""
    hub.throttle(4_000_000)
    wizard = make_wizard(qtbot, tmp_path / "model")
    start_download(qtbot, wizard)
    page = wizard.download_page
    wait_inside_weights(qtbot, page, at_least=5_000_000)
    return wizard, page, page.task


def wait_inside_weights(qtbot, page, at_least: int) -> None:
    """Until the page shows progress inside the weights file, past `at_least` bytes of the whole download."""

    def inside() -> bool:
        last = page.last_progress
        return last is not None and last.current_file == WEIGHTS and last.bytes_done > at_least

    qtbot.waitUntil(inside, timeout=WAIT_MS)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_then_conversion_writes_the_model(qtbot, hub, tiny_checkpoint, tmp_path):
    hub.throttle(20_000_000)  # ~2 s in all: several progress updates
    wizard = make_wizard(qtbot, tmp_path / "model")
    start_download(qtbot, wizard)
    page = wizard.download_page
    shown: set[str] = set()
    qtbot.waitUntil(
        lambda: shown.add(page.detail_label.text()) or wizard.currentId() != PageId.DOWNLOAD, timeout=WAIT_MS
    )
    assert any("MB/s" in text and "left" in text for text in shown), shown
    wait_page(qtbot, wizard, PageId.VERIFY)  # the wizard moves on by itself after each step

    snapshot = wizard.choice.source_dir
    for source in tiny_checkpoint[0].iterdir():
        assert sha256(snapshot / source.name) == sha256(source), source.name
    manifest = Manifest.load(tmp_path / "model")
    assert manifest.source == SourceSection("hub", repo_id=hub.repo_id, revision="main", commit=hub.commit_sha)
    assert manifest.precision == "int4"
    assert all(bar.value() == bar.maximum() for bar in wizard.convert_page.stage_bars.values())


def test_cancel_keeps_what_was_downloaded_and_resume_continues_with_a_range_request(qtbot, hub, tmp_path):
    hub.throttle(4_000_000)  # the 21 MB of weights would take ~5 s
    wizard = make_wizard(qtbot, tmp_path / "model")
    start_download(qtbot, wizard)
    page = wizard.download_page
    wait_inside_weights(qtbot, page, at_least=10_000_000)

    pressed = time.monotonic()
    click(qtbot, page.cancel_button)
    wait_failed(qtbot, page)
    assert time.monotonic() - pressed < 2.0
    assert page.retry_button.text() == "Resume"
    assert "Download paused" in page.status_label.text()
    assert not next_button(wizard).isEnabled()
    [partial] = partial_files(tmp_path / "hf_home")
    kept = partial.stat().st_size
    assert kept > 0

    hub.throttle(None)
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.CONVERT)
    assert hub.body_requests(WEIGHTS)[-1].range == f"bytes={kept}-"
    assert [r.range for r in hub.body_requests(WEIGHTS)].count(None) == 1, "the weights were not restarted"


def test_closing_mid_download_stops_the_thread_and_the_next_run_resumes(qtbot, hub, tmp_path):
    wizard, page, task = download_under_way(qtbot, hub, tmp_path)

    pressed = time.monotonic()
    click(qtbot, wizard.button(QWizard.CancelButton))  # closes the wizard: reject() -> done()
    assert not wizard.isVisible()
    assert task.isFinished(), "the download thread must have ended when close() returns"
    assert time.monotonic() - pressed < 2.0
    [partial] = partial_files(tmp_path / "hf_home")
    kept = partial.stat().st_size

    hub.throttle(None)  # "the app is restarted": a new wizard
    again = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, again)
    assert "already downloaded (it resumes from there)" in again.choose_page.summary_label.text()
    click(qtbot, next_button(again))
    wait_page(qtbot, again, PageId.CONVERT)
    assert hub.body_requests(WEIGHTS)[-1].range == f"bytes={kept}-"


def test_a_dead_connection_is_explained_and_retry_resumes(qtbot, hub, tmp_path):
    hub.drop_connection(WEIGHTS, at_byte=2_000_000)  # every time: the connection stays dead there
    wizard = make_wizard(qtbot, tmp_path / "model")
    start_download(qtbot, wizard)
    page = wizard.download_page
    wait_failed(qtbot, page)
    assert "connection dropped while downloading model.safetensors" in page.status_label.text()
    assert page.retry_button.text() == "Retry"

    hub.clear_faults()
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.CONVERT)
    assert hub.body_requests(WEIGHTS)[-1].range == "bytes=2000000-"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "server error (500)"),
        (404, "Not found on the Hub (404): chat_template.json"),
        (403, "forbidden (403)"),
    ],
)
def test_server_errors_are_explained_with_a_retry(qtbot, hub, tmp_path, status, message):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, wizard)
    hub.fail(status, on="resolve")
    click(qtbot, next_button(wizard))
    page = wizard.download_page
    wait_failed(qtbot, page)
    assert message in page.status_label.text()
    assert page.retry_button.text() == "Retry"
    assert not next_button(wizard).isEnabled()

    hub.clear_faults()
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.CONVERT)


def test_a_disk_that_filled_up_after_the_first_page_is_explained_with_a_retry(qtbot, hub, tmp_path, monkeypatch):
    real = REAL_DISK_USAGE(tmp_path)

    def filled_up_meanwhile(path):  # the first page (GUI thread) saw room; the download's own check does not
        on_gui_thread = threading.current_thread() is threading.main_thread()
        return real if on_gui_thread else real._replace(free=1_000)

    monkeypatch.setattr(shutil, "disk_usage", filled_up_meanwhile)
    wizard = make_wizard(qtbot, tmp_path / "model")
    start_download(qtbot, wizard)
    page = wizard.download_page
    wait_failed(qtbot, page)
    assert "Not enough free disk space" in page.status_label.text()
    assert "only 1.0 kB is free" in page.status_label.text()
    assert page.retry_button.text() == "Retry"
    assert not list((tmp_path / "hf_home").rglob("blobs/*")), "nothing written before the check"

    monkeypatch.setattr(shutil, "disk_usage", REAL_DISK_USAGE)  # the user freed space
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.CONVERT)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to make writes fail with ENOSPC")
def test_a_disk_full_while_writing_is_explained_with_a_retry(qtbot, hub, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, wizard)
    plan = wizard.choose_page.download_plan
    weights = next(f for f in plan.files if f.filename == WEIGHTS)
    partial = plan.storage_dir / "blobs" / f"{weights.etag}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.symlink_to("/dev/full")  # every write into the weights fails with ENOSPC

    click(qtbot, next_button(wizard))
    page = wizard.download_page
    wait_failed(qtbot, page)
    assert "The disk is full" in page.status_label.text()
    assert page.retry_button.text() == "Retry"

    partial.unlink()  # space was freed
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.CONVERT)


def test_back_during_a_download_stops_it_and_the_first_page_counts_what_is_kept(qtbot, hub, tmp_path):
    wizard, page, task = download_under_way(qtbot, hub, tmp_path)

    click(qtbot, wizard.button(QWizard.BackButton))
    assert wizard.currentId() == PageId.CHOOSE
    assert task.isFinished()
    qtbot.waitUntil(lambda: "it resumes from there" in wizard.choose_page.summary_label.text(), timeout=WAIT_MS)
