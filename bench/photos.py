"""Photos for the benches: scikit-image's sample photos when it is installed (an optional extra),
else a synthetic stand-in that says what it is."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from bench.measure import photo as synthetic_photo

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")
NO_SKIMAGE = "scikit-image is not installed (pip install scikit-image for a real photo)"


@dataclass(frozen=True)
class Photo:
    image: Image.Image
    source: str
    note: str = ""  # why it is not a real photo, when it is not


def sample_photo(name: str = "astronaut") -> Photo:
    """scikit-image's sample `name` (one of SAMPLES), or a 512x512 synthetic image with a note."""
    try:
        import skimage.data
    except ImportError:
        return Photo(synthetic_photo(512, SAMPLES.index(name)), "synthetic gradient with noise", NO_SKIMAGE)
    return Photo(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"), f"scikit-image {name}")
