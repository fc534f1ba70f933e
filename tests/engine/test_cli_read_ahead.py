"""Attach-only turns in a conversation file: their images are read before the next question, and
the answers are the ones asking everything at once gives."""

from __future__ import annotations

import json

import pytest

from tests.engine.test_cli import run_cli
from tests.reference import random_image


@pytest.fixture
def pictures(tmp_path):
    random_image(300, 200, 1).save(tmp_path / "a.png")
    random_image(160, 240, 2).save(tmp_path / "b.png")
    return tmp_path


def run_script(model, folder, turns, capsys, json_mode=True) -> tuple[dict | None, str]:
    script = folder / "chat.json"
    script.write_text(json.dumps(turns))
    code, out, err = run_cli(
        [model, "--conversation", script, "--greedy", "--max-new-tokens", "8", *(["--json"] if json_mode else [])],
        capsys,
    )
    assert code == 0, err
    return (json.loads(out) if json_mode else None), err


def answers(result: dict) -> list[list[int]]:
    return [turn["token_ids"] for turn in result["turns"]]


def test_an_attach_only_turn_gives_the_answer_of_asking_at_once(tiny_fp32, pictures, capsys):
    at_once, _ = run_script(tiny_fp32, pictures, [{"text": "Describe this image.", "images": ["a.png"]}], capsys)
    ahead, _ = run_script(tiny_fp32, pictures, [{"images": ["a.png"]}, {"text": "Describe this image."}], capsys)
    assert answers(ahead) == answers(at_once) and len(ahead["turns"]) == 1
    stats, cold = ahead["turns"][0]["stats"], at_once["turns"][0]["stats"]
    assert stats["prompt_tokens"] == cold["prompt_tokens"] and stats["image_tokens"] == cold["image_tokens"] == 70
    assert stats["ahead_tokens"] > stats["image_tokens"]  # the image and the turn's opening were read ahead
    assert stats["left_tokens"] == stats["prompt_tokens"] - stats["ahead_tokens"] < 15  # the question's words
    assert stats["vision_seconds"] == 0.0  # encoded during the read-ahead
    assert stats["predicted_wait"] > 0  # the read-ahead measured this machine
    (read,) = ahead["turns"][0]["read_ahead"]
    assert read["images"] == 1 and read["ahead_tokens"] == stats["ahead_tokens"] and read["vision_seconds"] > 0
    assert cold["ahead_tokens"] == 0 and cold["left_tokens"] == cold["prompt_tokens"]
    assert at_once["turns"][0]["read_ahead"] == []


def test_attached_images_come_before_the_questions_own(tiny_fp32, pictures, capsys):
    at_once, _ = run_script(tiny_fp32, pictures, [{"text": "Compare them.", "images": ["a.png", "b.png"]}], capsys)
    ahead, _ = run_script(
        tiny_fp32, pictures, [{"images": ["a.png"]}, {"text": "Compare them.", "images": ["b.png"]}], capsys
    )
    assert answers(ahead) == answers(at_once)
    stats = ahead["turns"][0]["stats"]
    b_tokens = stats["image_tokens"] - 70  # a.png has 70
    # b.png was read at send time with the question's words; a.png was read ahead
    assert b_tokens < stats["left_tokens"] < b_tokens + 15
    assert stats["ahead_tokens"] > 70


def test_an_image_attached_before_the_second_question(tiny_fp32, pictures, capsys):
    at_once, _ = run_script(
        tiny_fp32,
        pictures,
        [{"text": "Describe this image.", "images": ["a.png"]}, {"text": "And this one?", "images": ["b.png"]}],
        capsys,
    )
    ahead, _ = run_script(
        tiny_fp32,
        pictures,
        [{"text": "Describe this image.", "images": ["a.png"]}, {"images": ["b.png"]}, {"text": "And this one?"}],
        capsys,
    )
    assert answers(ahead) == answers(at_once) and len(ahead["turns"]) == 2
    first, second = (turn["stats"] for turn in ahead["turns"])
    assert first["ahead_tokens"] == 0 and ahead["turns"][0]["read_ahead"] == []
    assert second["ahead_tokens"] > second["image_tokens"] and second["left_tokens"] < 15
    assert [r["images"] for r in ahead["turns"][1]["read_ahead"]] == [1]


def test_two_attach_only_turns_add_up(tiny_fp32, pictures, capsys):
    at_once, _ = run_script(tiny_fp32, pictures, [{"text": "Compare them.", "images": ["a.png", "b.png"]}], capsys)
    ahead, _ = run_script(
        tiny_fp32, pictures, [{"images": ["a.png"]}, {"images": ["b.png"]}, {"text": "Compare them."}], capsys
    )
    assert answers(ahead) == answers(at_once)
    assert [r["images"] for r in ahead["turns"][0]["read_ahead"]] == [1, 2]
    assert ahead["turns"][0]["stats"]["left_tokens"] < 15


def test_without_json_stderr_says_what_was_read_ahead(tiny_fp32, pictures, capsys):
    _, err = run_script(
        tiny_fp32, pictures, [{"images": ["a.png"]}, {"text": "Describe this image."}], capsys, json_mode=False
    )
    assert "[turn 1: read a.png ahead of the next question: " in err
    assert " prompt tokens read ahead, first after " in err


def test_an_attached_file_that_is_no_image_keeps_the_answers_before_it(tiny_fp32, pictures, capsys):
    (pictures / "notes.png").write_text("these are not pixels")
    script = pictures / "chat.json"
    script.write_text(
        json.dumps(
            [
                {"text": "Describe this image.", "images": ["a.png"]},
                {"images": ["notes.png"]},
                {"text": "And this one?"},
            ]
        )
    )
    code, out, err = run_cli(
        [tiny_fp32, "--conversation", script, "--greedy", "--max-new-tokens", "4", "--json"], capsys
    )
    assert code == 2
    result = json.loads(out)
    assert len(result["turns"]) == 1 and result["error"].startswith("'notes.png' is not an image")
    assert err.splitlines() == [f"error: {result['error']}"]


def test_a_speed_file_gives_predictions_from_the_first_question(tiny_fp32, pictures, capsys, tmp_path):
    turns = [{"text": "Describe this image.", "images": ["a.png"]}]
    plain, _ = run_script(tiny_fp32, pictures, turns, capsys)
    assert plain["turns"][0]["stats"]["predicted_wait"] is None  # nothing measured, nothing predicted
    script = pictures / "chat.json"
    speeds = tmp_path / "speeds" / "speeds.json"
    code, out, err = run_cli(
        [
            tiny_fp32,
            "--conversation",
            script,
            "--greedy",
            "--max-new-tokens",
            "4",
            "--json",
            "--speed-file",
            speeds,
            "--calibrate",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["turns"][0]["stats"]["predicted_wait"] > 0 and "measured this machine" in err
    assert json.loads(speeds.read_text())["entries"]  # kept for the next run
