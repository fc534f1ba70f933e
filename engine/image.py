"""From a user's picture to the vision encoder's input, numpy + Pillow only.

The pixels must equal what transformers' Qwen2VLImageProcessor (PIL backend) produces, because
that is what the model saw in training: same smart_resize, PIL bicubic on uint8, the float64
rescale rounded to float32, and the same merge-window patch order. Loading is stricter than
transformers (EXIF orientation, 16-bit grey, animated files, readable errors) because the app
takes whatever file a user drops on it.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import EngineError, ImageError
from engine.image_formats import explain_unreadable, read_head

ImageSource = str | Path | bytes | Image.Image

MAX_ASPECT_RATIO = 200  # smart_resize refuses anything thinner


@dataclass(frozen=True)
class ImageProcessorConfig:
    """The preprocessing constants; the defaults are Qwen3-VL's real preprocessor_config.json."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 65536
    max_pixels: int = 16777216
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        """Side length in pixels of one LLM token (a merge window of patches)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_preprocessor_json(cls, data: dict) -> ImageProcessorConfig:
        """Read preprocessor_config.json; `size.shortest_edge/longest_edge` are PIXEL COUNTS."""
        default = cls()
        size = data.get("size") or {}
        min_pixels = size.get("shortest_edge", data.get("min_pixels", default.min_pixels))
        max_pixels = size.get("longest_edge", data.get("max_pixels", default.max_pixels))
        return cls(
            patch_size=int(data.get("patch_size", default.patch_size)),
            merge_size=int(data.get("merge_size", default.merge_size)),
            temporal_patch_size=int(data.get("temporal_patch_size", default.temporal_patch_size)),
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
            image_mean=_three(data.get("image_mean", default.image_mean)),
            image_std=_three(data.get("image_std", default.image_std)),
            rescale_factor=float(data.get("rescale_factor", default.rescale_factor)),
        )


def _three(value) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"expected 3 channel values, got {value!r}")
    return tuple(values)


# Pixel budgets per image (max_pixels). One LLM token covers 32x32 pixels, so a budget of
# k * 1024 pixels means at most k image tokens. The vision encoder attends over all 4k patches
# at once, so its cost grows with the square of this number.
DETAIL_PRESETS: dict[str, int] = {
    "standard": 256 * 32 * 32,  # 512x512 square -> 256 tokens
    "high": 1024 * 32 * 32,  # 1024x1024 square -> 1024 tokens
}


def detail_pixels(detail: str) -> int:
    """The pixel budget of an image detail the user chose (a key of DETAIL_PRESETS)."""
    if detail not in DETAIL_PRESETS:
        raise EngineError(f"unknown image detail '{detail}'; choose {', '.join(DETAIL_PRESETS)}")
    return DETAIL_PRESETS[detail]


@dataclass(frozen=True)
class PreparedImage:
    """Vision-encoder input for one image and the bookkeeping the prompt and positions need."""

    pixel_values: np.ndarray  # float32 [gh*gw, 3*temporal_patch_size*patch_size**2]
    grid_thw: tuple[int, int, int]  # (t, gh, gw) in patches
    num_tokens: int  # LLM tokens = t*gh*gw / merge_size**2
    resized_size: tuple[int, int]  # (width, height) fed to the encoder
    original_size: tuple[int, int]  # (width, height) after EXIF orientation


# ---------------------------------------------------------------------------------------------
# Loading


def load_image(source: ImageSource, max_image_pixels: int | None = None) -> Image.Image:
    """Open a file path, raw bytes or a PIL image and return an upright RGB image.

    `max_image_pixels` guards against decompression bombs; None means up to Pillow's error
    threshold (twice `Image.MAX_IMAGE_PIXELS`): an image between Pillow's warning and error
    thresholds is only large, and it is resized like any other. Every failure is an ImageError
    that names the file and the reason.
    """
    name = _describe(source)
    limit = _default_limit() if max_image_pixels is None else max_image_pixels
    # Pillow warns on stderr between its two thresholds (on open, and on some frame seeks);
    # _check_size applies the limit instead. The filter list is process-wide: loads overlapping
    # in two threads can at worst leave this one "ignore" in place, which changes nothing else.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _load(source, name, limit)


def _load(source: ImageSource, name: str, limit: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_size(source, name, limit)
        return _decode(source, name)
    if isinstance(source, bytes) and not source:
        raise ImageError(f"{name} is empty (0 bytes).")
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except FileNotFoundError:
        raise ImageError(f"'{source}' does not exist.") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a folder, not an image.") from None
    except PermissionError:
        raise ImageError(f"{name} cannot be read: permission denied.") from None
    except UnidentifiedImageError:
        path = None if isinstance(source, bytes) else Path(source)
        head = source[:4096] if path is None else read_head(path)
        raise ImageError(explain_unreadable(name, head, path)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to open safely: {exc}") from None
    except OSError as exc:
        raise ImageError(f"{name} cannot be read: {exc}") from None
    with opened:
        _check_size(opened, name, limit)
        return _decode(opened, name)


def _default_limit() -> int | None:
    """Pillow's own refusal threshold (None when the application turned the check off)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes):
        return "The pasted image"
    if isinstance(source, Image.Image):
        return "The image"
    return f"'{Path(source).name}'"


def _check_size(image: Image.Image, name: str, limit: int | None) -> None:
    width, height = image.size
    if limit and width * height > limit:
        raise ImageError(
            f"{name} is too large ({width}x{height}, {width * height / 1e6:.1f} megapixels; "
            f"the limit is {limit / 1e6:.1f} megapixels). Scale it down and try again."
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name} is empty ({width}x{height} pixels).")


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Decode the first frame, apply EXIF orientation, convert to RGB (always a new image)."""
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        upright = _apply_orientation(image)
        return to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to open safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name} is damaged or incomplete and cannot be decoded ({exc}).") from None


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a broken EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return image.copy()


_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white like transformers."""
    if image.mode in _HIGH_DEPTH_MODES:
        grey = Image.fromarray(_high_depth_to_uint8(image), mode="L")
        return grey.convert("RGB")
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16/32-bit grey to 0..255 (Pillow's own convert clips, turning most of it white).

    I;16 holds 0..65535. Mode I is what 16-bit data widens to, unless its values already fit
    in 8 bits. Mode F is taken as 0..1 when it fits there, else as 0..255.
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        top = values.max(initial=0.0)
        scaled = values * 255.0 if top <= 1.0 else values
    elif image.mode == "I" and values.max(initial=0) <= 255:
        scaled = values
    else:
        scaled = values / 257.0  # 65535 -> 255 and 8-bit values widened by x257 come back exact
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Resizing and patches


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) rounded to multiples of `factor` within the pixel budget, as transformers."""
    if height < 1 or width < 1:
        raise ImageError(f"The image is empty ({width}x{height} pixels).")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageError(
            f"The image is too long and thin ({width}x{height} pixels). Iris accepts sides "
            f"up to {MAX_ASPECT_RATIO} times longer than the other; crop it and try again."
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _budget(cfg: ImageProcessorConfig, max_pixels: int | None) -> int:
    budget = cfg.max_pixels if max_pixels is None else int(max_pixels)
    if budget < cfg.min_pixels:
        raise ValueError(f"max_pixels={budget} is below the model's minimum of {cfg.min_pixels} pixels")
    return budget


def tokens_for(width: int, height: int, cfg: ImageProcessorConfig, max_pixels: int | None = None) -> int:
    """LLM tokens an image of this size will cost, without touching its pixels."""
    h_bar, w_bar = smart_resize(height, width, cfg.factor, cfg.min_pixels, _budget(cfg, max_pixels))
    return (h_bar // cfg.factor) * (w_bar // cfg.factor)


def preprocess(image: Image.Image, cfg: ImageProcessorConfig, max_pixels: int | None = None) -> PreparedImage:
    """Resize, normalise and cut an RGB image into flattened patches (one frame, t = 1)."""
    rgb = image if image.mode == "RGB" else to_rgb(image)
    width, height = rgb.size
    h_bar, w_bar = smart_resize(height, width, cfg.factor, cfg.min_pixels, _budget(cfg, max_pixels))
    resized = rgb.resize((w_bar, h_bar), resample=Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.uint8)  # (H, W, 3)
    # transformers: float64 multiply then float32, then (x - mean) / std in float32.
    scaled = (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    std = np.asarray(cfg.image_std, dtype=np.float32)
    normalised = ((scaled - mean) / std).transpose(2, 0, 1)  # (3, H, W)
    patches, grid_h, grid_w = _patchify(normalised, cfg)
    return PreparedImage(
        pixel_values=patches,
        grid_thw=(1, grid_h, grid_w),
        num_tokens=grid_h * grid_w // cfg.merge_size**2,
        resized_size=(w_bar, h_bar),
        original_size=(width, height),
    )


def _patchify(chw: np.ndarray, cfg: ImageProcessorConfig) -> tuple[np.ndarray, int, int]:
    """[3, H, W] -> [gh*gw, 3*T*p*p]; merge windows in raster order, (C, T, p, p) inside a patch."""
    channels, height, width = chw.shape
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    grid_h, grid_w = height // p, width // p
    x = chw.reshape(channels, grid_h // m, m, p, grid_w // m, m, p)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # (bh, bw, mh, mw, C, ph, pw)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))  # a still = t frames
    flat = np.ascontiguousarray(x.reshape(grid_h * grid_w, channels * t * p * p), dtype=np.float32)
    return flat, grid_h, grid_w
