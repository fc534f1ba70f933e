"""The command line: options out of range and bad conversation files are refused in one line
before the model loads; a failing turn keeps the answers already given; a broken model says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine.__main__ as cli
from tests.reference import random_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the CLI gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli, "Engine", refuse)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """main() in this process: (exit code, stdout, stderr); argparse's exits count as exit codes."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--top-p", "2", "--top-p: must be above 0 and at most 1"),
        ("--top-p", "0", "--top-p: must be above 0 and at most 1"),
        ("--temperature", "-1", "--temperature: must be 0 (greedy) or more"),
        ("--temperature", "nan", "--temperature: must be 0 (greedy) or more"),
        ("--temperature", "inf", "--temperature: must be 0 (greedy) or more"),
        ("--max-new-tokens", "0", "--max-new-tokens: must be at least 1"),
        ("--max-new-tokens", "-1", "--max-new-tokens: must be at least 1"),
        ("--top-k", "-3", "--top-k: must be 0 or more"),
        ("--max-context", "0", "--max-context: must be at least 64 tokens"),
        ("--max-context", "-5", "--max-context: must be at least 64 tokens"),
        ("--max-context", "10", "--max-context: must be at least 64 tokens"),
        ("--threads", "-2", "--threads: must be at least 1"),
        ("--seed", "-1", "--seed: must be 0 or more"),
        ("--presence-penalty", "nan", "--presence-penalty: must be a finite number"),
    ],
)
def test_options_out_of_range_are_refused_before_the_model_loads(option, value, says, tmp_path, capsys, no_model_load):
    code, out, err = run_cli([tmp_path, "--prompt", "hi", option, value], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert says in line and f"(got {value})" in line


def test_a_context_too_small_for_the_first_question_names_the_option(tiny_fp32, tmp_path, capsys):
    image = tmp_path / "photo.png"
    random_image(300, 200, 1).save(image)
    code, out, err = run_cli(
        [tiny_fp32, "--image", image, "--prompt", "Describe this image.", "--max-context", "64"], capsys
    )
    assert code == 2
    line = one_error_line(err)
    assert "This conversation is full" in line and line.endswith("Or raise --max-context (it is 64).")


def test_temperature_zero_is_greedy(tiny_fp32, tmp_path, capsys):
    image = tmp_path / "photo.png"
    random_image(300, 200, 1).save(image)
    base = [tiny_fp32, "--image", image, "--prompt", "Describe this image.", "--max-new-tokens", "8", "--json"]
    code, out, err = run_cli(base + ["--greedy"], capsys)
    assert code == 0, err
    greedy = json.loads(out)["token_ids"]
    for seed in ("1", "2"):
        code, out, err = run_cli(base + ["--temperature", "0", "--seed", seed], capsys)
        assert code == 0, err
        assert json.loads(out)["token_ids"] == greedy


def test_a_model_with_broken_weights_is_one_error_line(tiny_fp32, tmp_path):
    """NaN in the final norm (as after a damaged conversion) makes every logit NaN."""
    import onnx
    from onnx import numpy_helper

    from engine.file_stamps import VERIFIED_NAME, sha256_file
    from engine.manifest import MANIFEST_NAME

    broken = tmp_path / "broken"
    shutil.copytree(tiny_fp32, broken)
    graph_path = broken / "decoder.onnx"
    model = onnx.load(str(graph_path), load_external_data=False)
    (norm,) = [t for t in model.graph.initializer if t.name == "model.language_model.norm.weight"]
    norm.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(norm).shape, np.nan, np.float32), norm.name))
    onnx.save(model, str(graph_path))
    manifest = json.loads((broken / MANIFEST_NAME).read_text())
    manifest["files"]["decoder.onnx"].update(size=graph_path.stat().st_size, sha256=sha256_file(graph_path))
    (broken / MANIFEST_NAME).write_text(json.dumps(manifest))
    (broken / VERIFIED_NAME).unlink(missing_ok=True)
    for sampling in (["--greedy"], ["--seed", "0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "engine", str(broken), "--prompt", "Hi", "--max-new-tokens", "4", *sampling],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
        line = one_error_line(proc.stderr)
        assert line.startswith("error: The model produced invalid numbers")
        assert "the model files may be damaged: convert it again" in line


# --- conversation files ------------------------------------------------------------------------


def test_image_paths_in_a_conversation_file_are_taken_from_its_folder(tiny_fp32, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "chats"
    (folder / "pics").mkdir(parents=True)
    random_image(300, 200, 1).save(folder / "pics" / "photo.png")
    script = folder / "chat.json"
    script.write_text(json.dumps([{"text": "Describe this image.", "images": ["pics/photo.png"]}]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(
        [tiny_fp32, "--conversation", script, "--greedy", "--max-new-tokens", "4", "--json"], capsys
    )
    assert code == 0, err
    (turn,) = json.loads(out)["turns"]
    assert turn["stats"]["image_tokens"] == 70


@pytest.mark.parametrize(
    "content, says",
    [
        ([{"text": "Hi", "images": "x.png"}], 'error: turn 1: "images" must be a list of paths, like ["x.png"]'),
        ([{"text": "Hi"}, {"text": "And?", "images": [3]}], 'error: turn 2: "images" must be a list of paths'),
        (
            [{"text": "Hi"}, {"text": "And?", "images": ["pics/missing.png"]}],
            "error: turn 2: the image 'pics/missing.png' does not exist (looked in ",
        ),
        ([{"images": []}], 'error: turn 1: give "text" (a question) or "images" (to attach to the next question)'),
        ([{}], 'error: turn 1: give "text" (a question) or "images"'),
        ([{"text": 3, "images": ["a.png"]}], 'error: turn 1: "text" must be a string'),
        (
            [{"text": "Hi"}, {"images": ["a.png"]}],
            'error: turn 2: its images are attached to the next question, but no turn with "text" follows',
        ),
        (
            [{"images": ["a.png"]}, {"images": ["a.png"]}],
            'error: turn 1: its images are attached to the next question, but no turn with "text" follows',
        ),
        (["Hi"], "error: turn 1: each turn must be an object"),
        ({"text": "Hi"}, "must be a JSON list of"),
        ([], "must be a JSON list of"),
    ],
)
def test_a_bad_conversation_file_is_one_line_before_the_model_loads(content, says, tmp_path, capsys, no_model_load):
    (tmp_path / "a.png").write_bytes(b"")  # only its existence is checked before the model loads
    script = tmp_path / "chat.json"
    script.write_text(json.dumps(content))
    code, out, err = run_cli([tmp_path, "--conversation", script, "--json"], capsys)
    assert code == 2 and out == ""
    assert says in one_error_line(err)


def test_a_conversation_file_that_is_not_utf8_is_one_line(tmp_path, capsys, no_model_load):
    script = tmp_path / "chat.json"
    script.write_bytes('[{"text": "Qu\'est-ce que c\'est, café ?"}]'.encode("latin-1"))
    code, out, err = run_cli([tmp_path, "--conversation", script], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "chat.json" in line and "is not UTF-8 text (byte 0xe9" in line


def test_a_conversation_file_saved_as_utf8_with_a_bom_is_read(tmp_path):
    from engine.script import ScriptTurn, read_script

    script = tmp_path / "chat.json"
    script.write_bytes('[{"text": "café ?"}]'.encode("utf-8-sig"))
    assert read_script(script) == [ScriptTurn("café ?", [], number=1)]


def test_a_missing_image_on_the_command_line_is_refused_before_the_model_loads(tmp_path, capsys, no_model_load):
    code, out, err = run_cli([tmp_path, "--image", "pics/nope.png", "--prompt", "hi"], capsys)
    assert code == 2 and one_error_line(err) == "error: the image 'pics/nope.png' does not exist"


def test_json_mode_keeps_the_finished_turns_when_a_later_turn_fails(tiny_fp32, tmp_path, capsys):
    random_image(300, 200, 1).save(tmp_path / "photo.png")
    (tmp_path / "notes.png").write_text("these are not pixels")
    script = tmp_path / "chat.json"
    script.write_text(
        json.dumps(
            [
                {"text": "Describe this image.", "images": ["photo.png"]},
                {"text": "Tell me more."},
                {"text": "And this one?", "images": ["notes.png"]},
                {"text": "Never asked."},
            ]
        )
    )
    code, out, err = run_cli(
        [tiny_fp32, "--conversation", script, "--greedy", "--max-new-tokens", "5", "--json"], capsys
    )
    assert code == 2
    result = json.loads(out)
    assert [len(t["token_ids"]) > 0 for t in result["turns"]] == [True, True]
    assert result["turns"][0]["stats"]["image_tokens"] == 70
    assert result["error"].startswith("'notes.png' is not an image")
    assert one_error_line(err) == f"error: {result['error']}"
    # the finished turns are the ones a run without the failing turn gives
    script.write_text(json.dumps(json.loads(script.read_text())[:2]))
    code, out, err = run_cli(
        [tiny_fp32, "--conversation", script, "--greedy", "--max-new-tokens", "5", "--json"], capsys
    )
    assert code == 0, err
    kept = [(t["text"], t["token_ids"]) for t in result["turns"]]
    assert [(t["text"], t["token_ids"]) for t in json.loads(out)["turns"]] == kept


@pytest.mark.parametrize(
    "options,words",
    [
        ({"max_context": 0}, "max_context must be at least 64"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"prefill_chunk": 0}, "prefill_chunk must be at least 1"),
        ({"image_detail": "ultra"}, "unknown image detail 'ultra'"),
    ],
)
def test_engine_options_out_of_range_are_refused_for_api_callers_too(options, words):
    from engine.engine import EngineOptions
    from engine.errors import EngineError

    with pytest.raises(EngineError, match=words):
        EngineOptions(**options)
