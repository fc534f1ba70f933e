"""The speed model: the cost laws fitted to samples predict other sizes, follow a machine that
changed, and are kept per model and CPU in one file that can be damaged or unwritable."""

from __future__ import annotations

import json
import os

import pytest

from engine.speeds import KEEP, SpeedModel, chunk_sizes


def vision_law(n: int) -> float:
    return 1.2e-3 * n + 5.1e-7 * n * n  # measured shape: linear layers + attention over all patches


def chunk_law(c: int, ctx: int) -> float:
    return 0.2 + 0.019 * c + 1.1e-6 * c * (ctx + c / 2)


def test_two_image_sizes_predict_a_third():
    model = SpeedModel("m")
    for n in (784, 3136):
        model.add_vision(n, vision_law(n))
    assert model.vision_seconds(1764) == pytest.approx(vision_law(1764), rel=1e-6)


def test_one_image_size_uses_the_attention_probe_for_larger_ones():
    model = SpeedModel("m")
    model.add_vision(784, vision_law(784))
    without = model.vision_seconds(3136)
    assert without == pytest.approx(vision_law(784) * 4)  # linear: far too short for a large image
    model.set_attention_probe(5.1e-7)
    assert model.vision_seconds(3136) == pytest.approx(vision_law(3136), rel=1e-6)


def test_chunk_law_is_recovered_and_prompts_sum_their_chunks():
    model = SpeedModel("m")
    for c, ctx in ((16, 0), (96, 0), (256, 0), (256, 512), (256, 1024), (64, 2000)):
        model.add_chunk("decoder", c, ctx, chunk_law(c, ctx))
    assert model.chunk_seconds("decoder", 200, 300) == pytest.approx(chunk_law(200, 300), rel=1e-6)
    assert model.chunk_seconds("prompt", 200, 300) is None  # another graph has its own speeds
    whole = model.prompt_seconds(lambda size: "decoder", 600, 100, 256)
    assert chunk_sizes(600, 256) == [256, 256, 88]
    assert whole == pytest.approx(chunk_law(256, 100) + chunk_law(256, 356) + chunk_law(88, 612), rel=1e-6)


def test_two_sizes_at_an_empty_cache_fit_the_call_and_token_costs():
    model = SpeedModel("m")
    model.add_chunk("decoder", 16, 0, chunk_law(16, 0))
    model.add_chunk("decoder", 96, 0, chunk_law(96, 0))
    assert model.has_chunks("decoder")
    assert model.chunk_seconds("decoder", 256, 0) == pytest.approx(chunk_law(256, 0), rel=0.01)


def test_costs_never_fit_negative():
    model = SpeedModel("m")
    # Per-token cost only, but the bigger chunk happened to run a little faster per token.
    model.add_chunk("decoder", 16, 0, 0.40)
    model.add_chunk("decoder", 96, 0, 2.30)
    g, a, b = model._fit_chunks("decoder")
    assert g >= 0 and a > 0 and b == 0
    assert model.chunk_seconds("decoder", 1, 0) > 0


def test_predictions_follow_a_machine_that_got_slower():
    model = SpeedModel("m")
    for _ in range(KEEP):
        model.add_vision(784, 1.0)
    for _ in range(KEEP):
        model.add_vision(784, 2.0)  # e.g. fewer threads or a busier machine: only new samples count
    assert model.vision_seconds(784) == pytest.approx(2.0)


def test_nothing_measured_predicts_nothing():
    model = SpeedModel("m")
    assert model.vision_seconds(784) is None and model.chunk_seconds("decoder", 16, 0) is None
    assert not model.has_vision() and not model.has_chunks("decoder")


def test_samples_are_stored_per_key(tmp_path):
    path = tmp_path / "speeds.json"
    model = SpeedModel("model-a|cpu", path)
    model.add_vision(784, 1.5)
    model.add_chunk("decoder", 16, 0, 0.5)
    model.set_attention_probe(4e-7)
    model.save()
    other = SpeedModel("model-b|cpu", path)
    other.add_vision(784, 9.0)
    other.save()
    again = SpeedModel("model-a|cpu", path)
    assert again.vision_seconds(784) == pytest.approx(1.5)  # the probe only shapes other sizes
    assert again.chunk_seconds("decoder", 16, 0) == pytest.approx(0.5)
    assert SpeedModel("model-b|cpu", path).vision_seconds(784) == pytest.approx(9.0)
    assert sorted(json.loads(path.read_text())["entries"]) == ["model-a|cpu", "model-b|cpu"]


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"version": 1, "entries": {"k": {"vision": [["x"]]}}}', '{"version": 99, "entries": {}}', "[]"],
)
def test_a_damaged_file_starts_afresh_and_is_replaced(tmp_path, content):
    path = tmp_path / "speeds.json"
    path.write_text(content)
    model = SpeedModel("k", path)
    assert not model.has_vision()
    model.add_vision(784, 1.0)
    model.save()
    assert SpeedModel("k", path).vision_seconds(784) == pytest.approx(1.0)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_only_loses_the_speeds(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        model = SpeedModel("k", folder / "speeds.json")
        model.add_vision(784, 1.0)
        model.save()  # no exception: predictions are a convenience
        assert model.vision_seconds(784) == pytest.approx(1.0)
    finally:
        folder.chmod(0o700)


def test_a_file_in_the_way_only_loses_the_speeds(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    model = SpeedModel("k", blocker / "speeds.json")
    model.add_vision(784, 1.0)
    model.save()
    assert model.vision_seconds(784) == pytest.approx(1.0)
