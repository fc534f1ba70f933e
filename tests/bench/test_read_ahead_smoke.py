"""bench.read_ahead on the tiny model: calibration, the cold ask and attaches N seconds before the
send are measured and reported in the documented structure."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from bench.read_ahead import load_photo, main
from tests.reference import random_image


def test_the_wait_after_send_is_measured_for_each_size_and_delay(tiny_int4, capsys):
    assert main([str(tiny_int4), "--sizes", "256,448", "--after", "0,0.2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["machine"]["cpu_class"] and result["machine"]["onnxruntime"]
    assert result["calibration_s"] > 0 and result["calibrated"] is True and result["speed_file"] is None
    assert result["question"]["tokens"] == 12
    assert result["photo"]["synthetic"] == (importlib.util.find_spec("skimage") is None)
    assert [s["side"] for s in result["sizes"]] == [256, 448]
    for size in result["sizes"]:
        cold = size["cold"]
        assert size["detail"] == "standard" and size["image_tokens"] == (size["side"] // 32) ** 2
        assert cold["wait_s"] >= 0 and cold["ahead_tokens"] == 0 and cold["left_tokens"] == cold["prompt_tokens"]
        assert cold["predicted_wait_s"] > 0 and cold["prediction_error"] is not None  # calibrated first
        assert [row["after_s"] for row in size["attached"]] == [0.0, 0.2]
        for row in size["attached"]:
            assert row["wait_s"] >= row["still_reading_s"] >= 0 and row["ask_wait_s"] >= 0
            # the send waits for the read, so only the question's words are left for the ask
            assert row["ahead_tokens"] > size["image_tokens"] and row["left_tokens"] < 20
            assert row["prompt_tokens"] == cold["prompt_tokens"]
            assert row["read_tokens"] == row["ahead_tokens"] and row["read_s"] > 0
            assert row["estimate_tokens"] == size["image_tokens"] and row["estimate_s"] > 0


def test_the_table_names_the_machine_and_each_row(tiny_int4, tmp_path, capsys):
    image = tmp_path / "photo.png"
    random_image(300, 200, 1).save(image)
    speeds = tmp_path / "speeds.json"
    assert (
        main([str(tiny_int4), "--image", str(image), "--sizes", "448", "--after", "0.1", "--speed-file", str(speeds)])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and f"the speed file {speeds}" in out and f"Photo: {image}," in out
    assert "| not attached (cold) |" in out and "| 0.1 s before |" in out
    assert speeds.is_file()  # calibration and the reads were stored where asked


def test_without_scikit_image_a_synthetic_image_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now fails
    picture = load_photo(None)
    assert picture.image.size == (512, 512) and "scikit-image is not installed" in picture.note


def test_an_image_that_cannot_be_read_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("these are not pixels")
    assert main([str(tmp_path), "--image", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "notes.png" in err[0]


def test_delays_that_are_not_seconds_are_refused(tmp_path, capsys):
    for value in ("-1", "nan", "soon", ""):
        with pytest.raises(SystemExit) as stopped:
            main([str(tmp_path), "--after", value])
        assert stopped.value.code == 2 and "--after" in capsys.readouterr().err
