"""engine.image against transformers' Qwen2VLImageProcessor (PIL backend) and known facts."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image, features

from engine.errors import ImageError
from engine.image import (
    DETAIL_PRESETS,
    ImageProcessorConfig,
    load_image,
    preprocess,
    smart_resize,
    tokens_for,
)


@pytest.fixture(scope="module")
def cfg(preprocessor_json) -> ImageProcessorConfig:
    return ImageProcessorConfig.from_preprocessor_json(preprocessor_json)


def noise(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random pixels plus a gradient, so resizing has both edges and smooth areas to get wrong."""
    rng = np.random.default_rng(seed)
    grad = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, channels))
    mixed = 0.5 * grad + 0.5 * rng.integers(0, 256, (height, width, channels))
    return mixed.astype(np.uint8).squeeze()


def reference(processor, image: Image.Image, max_pixels: int | None = None):
    kwargs = {}
    if max_pixels is not None:
        kwargs["size"] = {"shortest_edge": processor.size["shortest_edge"], "longest_edge": max_pixels}
    out = processor(images=[image], return_tensors="np", **kwargs)
    return out["pixel_values"], tuple(int(v) for v in out["image_grid_thw"][0])


def assert_same_as_transformers(processor, cfg, ours_source, theirs_image, max_pixels=None):
    prepared = preprocess(load_image(ours_source), cfg, max_pixels)
    pixels, grid = reference(processor, theirs_image, max_pixels)
    assert prepared.grid_thw == grid
    assert prepared.pixel_values.dtype == np.float32
    assert prepared.pixel_values.shape == pixels.shape == (grid[1] * grid[2], 3 * 2 * 16 * 16)
    np.testing.assert_array_equal(prepared.pixel_values, pixels)  # bit for bit
    assert prepared.num_tokens == grid[0] * grid[1] * grid[2] // 4
    assert prepared.resized_size == (grid[2] * 16, grid[1] * 16)
    return prepared


def test_config_reads_pixel_counts_from_the_real_json(cfg):
    assert (cfg.min_pixels, cfg.max_pixels) == (65536, 16777216)
    assert (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size, cfg.factor) == (16, 2, 2, 32)
    assert cfg.image_mean == cfg.image_std == (0.5, 0.5, 0.5)
    assert cfg.rescale_factor == pytest.approx(1 / 255)


@pytest.mark.parametrize(
    "size",
    [(300, 300), (640, 200), (150, 500), (20, 30), (517, 389), (96, 2000)],
    ids=["square", "wide", "tall", "tiny", "odd", "strip"],
)
def test_rgb_matches_transformers(hf_image_processor, cfg, size):
    image = Image.fromarray(noise(*size), "RGB")
    prepared = assert_same_as_transformers(hf_image_processor, cfg, image, image)
    assert prepared.original_size == size


def test_tiny_image_is_scaled_up_to_the_minimum(hf_image_processor, cfg):
    image = Image.fromarray(noise(10, 12), "RGB")
    prepared = assert_same_as_transformers(hf_image_processor, cfg, image, image)
    assert prepared.resized_size[0] * prepared.resized_size[1] >= cfg.min_pixels
    assert prepared.num_tokens >= 64


def test_over_budget_is_scaled_down_like_transformers(hf_image_processor, cfg):
    image = Image.fromarray(noise(1500, 1000), "RGB")
    budget = DETAIL_PRESETS["standard"]
    prepared = assert_same_as_transformers(hf_image_processor, cfg, image, image, max_pixels=budget)
    assert prepared.resized_size[0] * prepared.resized_size[1] <= budget
    assert prepared.num_tokens <= 256


def test_presets_cap_a_large_square_at_their_token_counts(cfg):
    assert tokens_for(4000, 4000, cfg, DETAIL_PRESETS["standard"]) == 256
    assert tokens_for(4000, 4000, cfg, DETAIL_PRESETS["high"]) == 1024
    with pytest.raises(ValueError, match="below the model's minimum"):
        tokens_for(100, 100, cfg, max_pixels=1000)


@pytest.mark.parametrize(
    ("height", "width", "expected", "tokens"),
    [(200, 300, (224, 320), 70), (100, 100, (256, 256), 64), (1080, 1920, (1088, 1920), 2040)],
)
def test_smart_resize_known_values(cfg, height, width, expected, tokens):
    """Worked examples from the architecture reference (section 2)."""
    assert smart_resize(height, width, 32, cfg.min_pixels, cfg.max_pixels) == expected
    assert tokens_for(width, height, cfg) == tokens


def test_smart_resize_rounds_half_to_even(cfg):
    # 80/32 = 2.5 rounds to 2 (banker's rounding), 112/32 = 3.5 rounds to 4.
    assert smart_resize(80, 112 * 10, 32, 0, 10**9) == (64, 1120)
    assert smart_resize(112, 80 * 10, 32, 0, 10**9) == (128, 800)


def test_smart_resize_and_token_count_match_transformers_on_a_sweep(hf_image_processor, cfg):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_resize

    rng = np.random.default_rng(1)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 5000, (300, 2))]
    sizes += [(16, 3200), (48, 48), (1, 200), (3024, 4032)]
    for budget in (cfg.max_pixels, DETAIL_PRESETS["standard"], DETAIL_PRESETS["high"]):
        for h, w in sizes:
            if max(h, w) / min(h, w) > 200:
                continue
            assert smart_resize(h, w, 32, cfg.min_pixels, budget) == hf_resize(
                h, w, factor=32, min_pixels=cfg.min_pixels, max_pixels=budget
            )
            patches = hf_image_processor.get_number_of_image_patches(
                h, w, {"min_pixels": cfg.min_pixels, "max_pixels": budget}
            )
            assert tokens_for(w, h, cfg, budget) == patches // 4


def test_too_thin_image_is_refused(cfg):
    with pytest.raises(ImageError, match="too long and thin"):
        smart_resize(10, 2010, 32, cfg.min_pixels, cfg.max_pixels)
    with pytest.raises(ImageError, match="too long and thin"):
        preprocess(Image.new("RGB", (2010, 10)), cfg)


# --- modes: transformers' convert_to_rgb is the reference where it is right --------------------


def _png_roundtrip(image: Image.Image, **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **save_args)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "CMYK", "P", "P+transparency"])
def test_modes_match_transformers(hf_image_processor, cfg, mode):
    rgba = Image.fromarray(noise(200, 150, channels=4, seed=3), "RGBA")
    if mode == "P":
        image = rgba.convert("RGB").quantize(64)
    elif mode == "P+transparency":
        palette = rgba.convert("RGB").quantize(64)
        image = Image.open(io.BytesIO(_png_roundtrip(palette, transparency=5)))
        assert image.info.get("transparency") == 5
    else:
        image = rgba.convert(mode)
    image.load()
    assert_same_as_transformers(hf_image_processor, cfg, image, image)


def test_alpha_is_composited_onto_white():
    clear = Image.new("RGBA", (4, 4), (10, 200, 30, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (4, 4), (0, 128))
    assert load_image(half).getpixel((0, 0)) == (127, 127, 127)


def test_16_bit_grey_keeps_its_tones(hf_image_processor, cfg):
    """An 8-bit ramp widened to 16 bits (x257) must come back as the same ramp; Pillow's own
    convert('RGB') clips it to white instead."""
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(20, 0).repeat(20, 1)
    wide = Image.fromarray(ramp.astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    reopened = load_image(_png_roundtrip(wide))
    expected = np.repeat(ramp[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(reopened), expected)
    # mode I (32-bit) with 16-bit data, and float images in 0..1
    as_i = Image.fromarray(ramp.astype(np.int32) * 257)
    assert as_i.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(as_i))[:, :, 0], ramp)
    as_f = Image.fromarray(ramp.astype(np.float32) / 255)
    assert as_f.mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(as_f))[:, :, 0], ramp)
    # and the pixels then go through the same pipeline as transformers
    assert_same_as_transformers(hf_image_processor, cfg, reopened, reopened)


def test_exif_rotated_jpeg_is_upright(hf_image_processor, cfg, tmp_path):
    from transformers.image_utils import load_image as hf_load_image

    pixels = noise(120, 60)
    pixels[:, :30] = (255, 0, 0)  # red on the left when stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=95, exif=exif.tobytes())

    upright = load_image(path)
    assert upright.size == (60, 120)
    r, g, b = upright.getpixel((30, 5))  # the stored left edge is now on top
    assert r > 200 and g < 60 and b < 60
    prepared = assert_same_as_transformers(hf_image_processor, cfg, path, hf_load_image(str(path)))
    assert prepared.original_size == (60, 120)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_uses_the_first_frame(fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(
        buf,
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        **({"lossless": True} if fmt == "WEBP" else {}),
    )
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    r, g, b = load_image(buf.getvalue()).getpixel((5, 5))
    assert r > 200 and b < 50


def test_sources_path_bytes_and_pil_agree(tmp_path):
    image = Image.fromarray(noise(50, 40), "RGB")
    path = tmp_path / "a.png"
    image.save(path)
    from_path, from_str = load_image(path), load_image(str(path))
    from_bytes, from_pil = load_image(path.read_bytes()), load_image(image)
    for other in (from_str, from_bytes, from_pil):
        np.testing.assert_array_equal(np.asarray(from_path), np.asarray(other))
    assert from_path.mode == "RGB"


# --- bad input --------------------------------------------------------------------------------


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels")
    with pytest.raises(ImageError, match=r"'notes\.png' is not an image"):
        load_image(path)


def test_truncated_png(tmp_path):
    data = _png_roundtrip(Image.fromarray(noise(300, 200), "RGB"))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"'cut\.png' is damaged or incomplete"):
        load_image(path)


def test_missing_file_folder_and_empty_bytes(tmp_path):
    with pytest.raises(ImageError, match=r"'nope\.jpg' does not exist"):
        load_image("nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match=r"The pasted image is empty \(0 bytes\)"):
        load_image(b"")


def test_a_missing_file_is_named_by_the_path_as_given(tmp_path):
    with pytest.raises(ImageError, match=r"'pics/nope\.jpg' does not exist"):
        load_image("pics/nope.jpg")
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "pics" / "nope.jpg")
    assert str(tmp_path / "pics" / "nope.jpg") in str(error.value)


# The start of a real HEIC photo: an ISO BMFF `ftyp` box (major brand, minor version, brands).
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x00meta" + bytes(64)
HEIC_MIF1_HEAD = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heicmiaf" + bytes(64)


@pytest.mark.parametrize(
    "name, data, what",
    [
        ("x.heic", HEIC_HEAD, r" is a HEIC photo, which Iris cannot read yet; convert it to JPEG or PNG"),
        ("IMG_0001.HEIC", HEIC_MIF1_HEAD, r" is a HEIC photo"),
        (
            "x.svg",
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            r" is a vector drawing \(SVG\).*export it as a PNG",
        ),
        (
            "bare.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5"/></svg>',
            r" is a vector drawing \(SVG\)",
        ),
        ("x.png", b"", r" is empty \(0 bytes\)"),
    ],
    ids=["heic", "heic-in-mif1", "svg", "bare-svg", "empty"],
)
def test_heic_svg_and_empty_files_say_what_they_are(tmp_path, name, data, what):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=f"^'{re.escape(name)}'{what}"):
        load_image(path)
    with pytest.raises(ImageError, match=f"^The pasted image{what}"):
        load_image(data)


def test_a_gzipped_svg_is_named_too(tmp_path):
    import gzip

    path = tmp_path / "logo.svgz"
    path.write_bytes(gzip.compress(b'<svg xmlns="http://www.w3.org/2000/svg"/>'))
    with pytest.raises(ImageError, match=r"'logo\.svgz' is a vector drawing \(SVG\)"):
        load_image(path)


def test_avif_is_read_and_listed_among_the_formats(tmp_path):
    if not features.check("avif"):
        pytest.skip("Pillow built without AVIF")
    path = tmp_path / "photo.avif"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, "AVIF", quality=90)
    image = load_image(path)
    assert image.size == (64, 48)
    r, g, b = image.getpixel((10, 10))
    assert r > 180 and g < 60 and b < 60
    notes = tmp_path / "notes.png"
    notes.write_text("these are not pixels")
    with pytest.raises(ImageError, match=r"not a PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF picture"):
        load_image(notes)


def test_without_avif_support_avif_is_neither_listed_nor_promised(tmp_path, monkeypatch):
    """A Pillow without its AVIF plugin (as in a trimmed bundle) must not list AVIF, and says so."""
    if not features.check("avif"):
        pytest.skip("Pillow built without AVIF: no way to write the test file")
    from engine import image_formats

    path = tmp_path / "photo.avif"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, "AVIF")
    real_check = features.check
    monkeypatch.setattr(image_formats.features, "check", lambda name: name != "avif" and real_check(name))
    Image.init()  # load every plugin first, then take AVIF's away
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "AVIF"])
    assert "AVIF" not in image_formats.format_names() and "*.avif" not in image_formats.file_patterns()
    with pytest.raises(ImageError, match=r"'photo\.avif' is an AVIF picture, which this copy of Iris cannot read"):
        load_image(path)


def test_decompression_bomb_is_a_readable_error(monkeypatch):
    import warnings

    data = _png_roundtrip(Image.new("RGB", (100, 100)))
    # Over twice Pillow's limit: Pillow itself refuses (DecompressionBombError).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        load_image(data)
    # Between the limit and twice the limit Pillow only warns: the image is large, not a bomb.
    # It is read (and later resized) like any other, and Pillow's raw warning is not shown.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(data).size == (100, 100)
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert not [f for f in warnings.filters if f[2] is Image.DecompressionBombWarning]  # nothing left behind


def test_a_large_gif_frame_gives_no_raw_warning(monkeypatch):
    import warnings

    frames = [Image.new("RGB", (100, 100), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(buf.getvalue()).getpixel((5, 5))[0] > 200
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []


def test_engine_pixel_limit_option():
    data = _png_roundtrip(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageError, match=r"100x100.*limit is 0\.0 megapixels"):
        load_image(data, max_image_pixels=5000)
    assert load_image(data, max_image_pixels=10000).size == (100, 100)
