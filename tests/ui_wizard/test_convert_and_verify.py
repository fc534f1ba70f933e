"""Converting a checkpoint folder the user has, checking an Iris model folder, and Finish -> modelReady."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.manifest import Manifest, SourceSection
from tests.ui_wizard import (
    WAIT_MS,
    choose_download,
    choose_folder,
    click,
    finish_button,
    make_wizard,
    next_button,
    wait_failed,
    wait_page,
)
from ui.wizard import needs_setup
from ui.wizard.choice import PageId


def finish(qtbot, wizard) -> Path:
    """Wait for the verify page to pass, press Finish, return what modelReady carried."""
    qtbot.waitUntil(lambda: finish_button(wizard).isEnabled(), timeout=WAIT_MS)
    assert all(mark.text() == "✓" for mark in wizard.verify_page.step_marks.values())
    with qtbot.waitSignal(wizard.modelReady, timeout=WAIT_MS) as ready:
        click(qtbot, finish_button(wizard))
    assert not wizard.isVisible()
    return ready.args[0]


def test_download_convert_verify_finish(qtbot, hub, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_download(qtbot, wizard)
    click(qtbot, next_button(wizard))
    wait_page(qtbot, wizard, PageId.VERIFY)

    assert finish(qtbot, wizard) == tmp_path / "model"
    assert not needs_setup(tmp_path / "model")
    assert "Iris is ready: int4 model" in wizard.verify_page.status_label.text()


def test_a_checkpoint_folder_is_converted_and_checked(qtbot, tiny_checkpoint, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    click(qtbot, next_button(wizard))
    assert wizard.currentId() == PageId.CONVERT
    wait_page(qtbot, wizard, PageId.VERIFY)
    assert all(bar.value() == bar.maximum() for bar in wizard.convert_page.stage_bars.values())

    assert finish(qtbot, wizard) == tmp_path / "model"
    assert Manifest.load(tmp_path / "model").source == SourceSection("folder", path=str(tiny_checkpoint[0]))


def test_cancelled_conversion_leaves_nothing_and_start_again_works(qtbot, tiny_checkpoint, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    click(qtbot, next_button(wizard))
    page = wizard.convert_page
    click(qtbot, page.cancel_button)  # the conversion has only just begun
    wait_failed(qtbot, page)
    assert page.retry_button.text() == "Start again"
    assert "Conversion cancelled. Nothing was written" in page.status_label.text()
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model.partial-*"))

    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.VERIFY)
    assert finish(qtbot, wizard) == tmp_path / "model"


def test_a_target_another_conversion_is_writing_is_refused_and_retry_works(qtbot, tiny_checkpoint, tmp_path):
    """The wizard's conversion respects the lock a command-line export holds on the same folder."""
    from exporter.file_lock import try_lock
    from exporter.target import lock_path

    other = try_lock(lock_path(tmp_path / "model"))
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    click(qtbot, next_button(wizard))
    page = wizard.convert_page
    wait_failed(qtbot, page)
    assert f"{tmp_path / 'model'} is being written by another conversion right now" in page.status_label.text()
    assert not (tmp_path / "model").exists()

    other.release()  # the other conversion has finished
    click(qtbot, page.retry_button)
    wait_page(qtbot, wizard, PageId.VERIFY)
    assert finish(qtbot, wizard) == tmp_path / "model"


def test_a_rerun_replaces_the_model_in_the_target(qtbot, tiny_checkpoint, tiny_fp32, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_fp32, target)
    wizard = make_wizard(qtbot, target)
    choose_folder(qtbot, wizard, tiny_checkpoint[0])
    assert f"The model now in {target} is replaced" in wizard.choose_page.summary_label.text()
    click(qtbot, next_button(wizard))  # int4, the default, replaces the fp32 model
    assert finish(qtbot, wizard) == target
    assert Manifest.load(target).precision == "int4"


def test_an_iris_model_folder_is_checked_and_used_where_it_is(qtbot, tiny_int4, tmp_path):
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, tiny_int4)
    click(qtbot, next_button(wizard))
    assert wizard.currentId() == PageId.VERIFY
    assert finish(qtbot, wizard) == tiny_int4
    assert not (tmp_path / "model").exists()


def test_a_damaged_model_folder_fails_the_check_with_its_reason(qtbot, tiny_int4, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_int4, damaged)
    data = damaged / "decoder.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only hashing finds it
    data.write_bytes(bytes(raw))
    (damaged / ".verified.json").unlink(missing_ok=True)

    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, damaged)
    click(qtbot, next_button(wizard))
    page = wizard.verify_page
    wait_failed(qtbot, page)
    assert "decoder.onnx.data is damaged" in page.status_label.text()
    assert page.step_marks["files"].text() == "✗"
    assert page.retry_button.text() == "Retry"
    assert not finish_button(wizard).isEnabled()


def test_a_folder_with_a_missing_file_is_refused_on_the_first_page(qtbot, tiny_int4, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_int4, broken)
    (broken / "vision.onnx.data").unlink()
    wizard = make_wizard(qtbot, tmp_path / "model")
    choose_folder(qtbot, wizard, broken)
    problem = wizard.choose_page.problem_label.text()
    assert "holds an Iris model that cannot be used" in problem and "vision.onnx.data is missing" in problem
    assert not next_button(wizard).isEnabled()
    assert needs_setup(broken)
