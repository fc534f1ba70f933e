"""The exported graphs against transformers on a tiny random Qwen3-VL (the ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import (
    ExportedModel,
    image_prompt,
    random_image,
    reference_greedy,
    reference_logits,
    reference_rope,
)

# (width, height, max_pixels): square, wide, tall, tiny (scaled up to the minimum), over the budget
IMAGES = {
    "square": (256, 256, None),
    "wide": (640, 97, None),
    "tall": (120, 500, None),
    "tiny": (30, 40, None),
    "budget": (900, 700, 160_000),
}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def fp32_model(tiny_fp32):
    return ExportedModel(tiny_fp32)


@pytest.mark.parametrize("name", IMAGES)
def test_vision_embeddings_and_every_deepstack_level_match(name, tiny_checkpoint, fp32_model):
    import torch

    model = tiny_checkpoint[1]
    w, h, budget = IMAGES[name]
    prompt = image_prompt(random_image(w, h, seed=len(name)), max_pixels=budget)
    with torch.no_grad():
        ref = model.model.visual(prompt.pixel_values, grid_thw=prompt.grid_thw)
    embeds, deepstack = fp32_model.encode(prompt)
    assert embeds.shape == tuple(ref.pooler_output.shape)
    assert rel_err(embeds, ref.pooler_output.numpy()) < 1e-4
    assert deepstack.shape[0] == len(ref.deepstack_features) == 3
    for level, feature in enumerate(ref.deepstack_features):
        assert rel_err(deepstack[level], feature.numpy()) < 1e-4, f"DeepStack level {level}"
    if budget is not None:
        t, gh, gw = prompt.grid_thw[0].tolist()
        assert gh * gw * 16 * 16 <= budget


def test_prefill_logits_with_an_image_match_at_every_position(tiny_checkpoint, fp32_model):
    model = tiny_checkpoint[1]
    prompt = image_prompt(random_image(300, 200, seed=3))
    positions, _ = reference_rope(model, prompt)
    ours = fp32_model.prefill(prompt, positions, all_logits=True)
    ref = reference_logits(model, prompt)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("name", ["square", "wide", "tall", "tiny", "budget", "text-only"])
def test_prefill_and_20_greedy_steps_through_the_kv_cache_equal_generate(name, tiny_checkpoint, fp32_model):
    model = tiny_checkpoint[1]
    if name == "text-only":
        prompt = image_prompt(None, text_ids=(9707, 1879, 0, 3555, 374, 419, 30))
    else:
        w, h, budget = IMAGES[name]
        prompt = image_prompt(random_image(w, h, seed=len(name)), max_pixels=budget)
    positions, delta = reference_rope(model, prompt)
    expected = reference_greedy(model, prompt, 20)
    assert fp32_model.greedy(prompt, positions, delta, 20) == expected


@pytest.mark.parametrize("image", [None, (256, 256)])
def test_the_tiny_model_does_not_collapse_to_one_token(image, tiny_checkpoint):
    """Token-by-token comparison only has teeth if greedy decoding gives varied tokens."""
    prompt = image_prompt(
        None if image is None else random_image(*image, seed=6), text_ids=(9707, 1879, 0, 3555, 374, 419, 30)
    )
    assert len(set(reference_greedy(tiny_checkpoint[1], prompt, 20))) >= 4


def test_int4_export_stays_close(tiny_checkpoint, tiny_int4, capsys):
    model = tiny_checkpoint[1]
    prompt = image_prompt(random_image(300, 200, seed=3))
    positions, delta = reference_rope(model, prompt)
    int4 = ExportedModel(tiny_int4)
    ours = int4.prefill(prompt, positions, all_logits=True)
    ref = reference_logits(model, prompt)
    err = rel_err(ours, ref)
    ours_tokens = int4.greedy(prompt, positions, delta, 20)
    ref_tokens = reference_greedy(model, prompt, 20)
    agree = sum(a == b for a, b in zip(ours_tokens, ref_tokens))
    top1 = float(np.mean(ours.argmax(-1) == ref.argmax(-1)))
    with capsys.disabled():
        print(
            f"\n[int4 tiny] max logit error {err:.3f} of scale, prefill top-1 agreement {top1:.2f}, "
            f"greedy agreement {agree}/20"
        )
    # Tiny random weights (K=64, two blocks per row) are the worst case for 4-bit; this bound still
    # catches a broken packing or a wrong scale layout, which give errors of order 1 or more.
    assert err < 0.35
    assert top1 > 0.5


def test_dropping_deepstack_is_caught(tiny_checkpoint, fp32_model):
    model = tiny_checkpoint[1]
    prompt = image_prompt(random_image(300, 200, seed=3))
    positions, _ = reference_rope(model, prompt)
    ref = reference_logits(model, prompt)
    ours = fp32_model.prefill(prompt, positions, all_logits=True, drop_deepstack=True)
    assert np.abs(ours - ref).max() > 1e-2  # the same check that passes above fails here


def test_chunked_mrope_is_caught(tiny_checkpoint, tmp_path, monkeypatch):
    """Plant the Qwen2.5-VL chunked MRoPE layout in the exporter: parity must fail."""
    import exporter.graph.decoder as dec
    from exporter.export import ExportOptions, export_model

    def chunked(g, cfg, position_ids):
        half = cfg.head_dim // 2
        inv = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float32) / cfg.head_dim))
        axis_of = np.repeat(np.arange(3), cfg.mrope_section)
        select = np.zeros((3, 1, 1, half), np.float32)
        select[axis_of, 0, 0, np.arange(half)] = 1.0
        pos = g.op("Unsqueeze", g.op("Cast", position_ids, to=1), g.const([3]))
        freqs = g.op("Mul", pos, g.const(inv.astype(np.float32)[None, None, None, :], np.float32))
        ang = g.op("ReduceSum", g.op("Mul", freqs, g.const(select, np.float32)), g.const([0]), keepdims=0)
        ang = g.op("Squeeze", ang, g.const([0]))
        return g.op("Cos", ang), g.op("Sin", ang)

    monkeypatch.setattr(dec, "_mrope_cos_sin", chunked)
    export_model(tiny_checkpoint[0], tmp_path / "bad", ExportOptions("fp32"))
    model = tiny_checkpoint[1]
    prompt = image_prompt(random_image(300, 200, seed=3))
    positions, _ = reference_rope(model, prompt)
    ours = ExportedModel(tmp_path / "bad").prefill(prompt, positions, all_logits=True)
    assert np.abs(ours - reference_logits(model, prompt)).max() > 1e-2


def test_raster_order_position_embedding_is_caught(tiny_checkpoint, tmp_path, monkeypatch):
    import torch

    import exporter.graph.vision as vis
    from exporter.export import ExportOptions, export_model

    def raster(g, t, gh, gw, m):
        zero, one, ax0, ax1 = g.const(0), g.const(1), g.const([0]), g.const([1])
        hw = g.op("Concat", g.op("Unsqueeze", gh, ax0), g.op("Unsqueeze", gw, ax0), axis=0)
        r = g.op("Expand", g.op("Unsqueeze", g.op("Range", zero, gh, one), ax1), hw)
        c = g.op("Expand", g.op("Unsqueeze", g.op("Range", zero, gw, one), ax0), hw)
        return g.op("Reshape", r, g.const([-1])), g.op("Reshape", c, g.const([-1]))

    monkeypatch.setattr(vis, "_merge_order_coords", raster)
    export_model(tiny_checkpoint[0], tmp_path / "bad", ExportOptions("fp32"))
    prompt = image_prompt(random_image(300, 200, seed=3))
    with torch.no_grad():
        ref = tiny_checkpoint[1].model.visual(prompt.pixel_values, grid_thw=prompt.grid_thw).pooler_output.numpy()
    embeds, _ = ExportedModel(tmp_path / "bad").encode(prompt)
    assert rel_err(embeds, ref) > 1e-2


@pytest.mark.parametrize("vision", ["int8", "int8-block"])
def test_quantized_vision_stays_close(vision, tiny_checkpoint, tiny_int4, tmp_path, capsys):
    """The default int4 export carries int8 vision weights (DynamicQuantizeMatMul); int8-block
    (MatMulNBits 8-bit, activations quantized per block) is the optional closer one."""
    import torch

    from exporter.export import ExportOptions, export_model

    model_dir = tiny_int4
    if vision != "int8":
        model_dir = tmp_path / vision
        export_model(tiny_checkpoint[0], model_dir, ExportOptions("int4", vision=vision))
    prompt = image_prompt(random_image(640, 480, seed=5))
    with torch.no_grad():
        ref = tiny_checkpoint[1].model.visual(prompt.pixel_values, grid_thw=prompt.grid_thw)
    embeds, deepstack = ExportedModel(model_dir).encode(prompt)
    errors = [rel_err(embeds, ref.pooler_output.numpy())] + [
        rel_err(deepstack[i], f.numpy()) for i, f in enumerate(ref.deepstack_features)
    ]
    with capsys.disabled():
        print(
            f"\n[{vision} vision tiny] max error of scale: embeds {errors[0]:.4f}, "
            f"DeepStack {', '.join(f'{e:.4f}' for e in errors[1:])}"
        )
    assert max(errors) < 0.05


def test_the_vision_graph_takes_one_frame_and_refuses_rows_of_another_width(fp32_model):
    """A still's temporal frames are identical, so the graph takes one frame per patch (half the
    input); its embeddings equal transformers' (tests above). Rows that fit neither width are an
    inconsistent model folder, reported as such rather than as an onnxruntime shape error."""
    from engine.errors import ArtifactError

    prompt = image_prompt(random_image(128, 96, seed=11))
    rows = prompt.pixel_values.numpy()
    runner = fp32_model.vision
    assert runner.session.get_inputs()[0].shape[1] == 3 * 16 * 16 == rows.shape[1] // 2
    grid = tuple(prompt.grid_thw[0].tolist())
    with pytest.raises(ArtifactError, match="values per patch"):
        runner.encode(rows[:, :1000], grid)


@pytest.fixture(scope="module")
def fp16_cache_model(tiny_checkpoint, tmp_path_factory):
    from exporter.export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("art") / "fp32-kv16"
    export_model(tiny_checkpoint[0], out, ExportOptions("fp32", kv_cache="fp16"))
    return ExportedModel(out)


def test_an_fp16_kv_cache_keeps_logits_close_and_greedy_tokens_equal(tiny_checkpoint, fp16_cache_model, capsys):
    """Keys and values rounded to fp16 (attention still accumulates in fp32): near-exact logits,
    and the same greedy tokens as transformers with an image and through 20 cached steps."""
    model = tiny_checkpoint[1]
    assert fp16_cache_model.decoder.cache.buffers[0].dtype == np.float16
    prompt = image_prompt(random_image(300, 200, seed=3))
    positions, delta = reference_rope(model, prompt)
    ours = fp16_cache_model.prefill(prompt, positions, all_logits=True)
    ref = reference_logits(model, prompt)
    err = rel_err(ours, ref)
    with capsys.disabled():
        print(f"\n[fp16 KV tiny] max logit error {err:.2e} of scale")
    assert 0 < err < 1e-2  # not bit-exact (it is fp16), but far inside int4's error
    assert fp16_cache_model.greedy(prompt, positions, delta, 20) == reference_greedy(model, prompt, 20)
