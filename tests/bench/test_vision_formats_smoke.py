"""bench.vision_formats on the tiny checkpoint with a photo of our own: every format runs and is
compared with the first one given, the reference."""

from __future__ import annotations

from bench.vision_formats import main
from tests.reference import random_image


def test_each_format_is_built_and_compared_with_fp32(tiny_checkpoint, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    random_image(300, 200, 1).save(photo)
    assert (
        main(
            [
                str(tiny_checkpoint[0]),
                "--workdir",
                str(tmp_path / "work"),
                "--formats",
                "fp32",
                "int8",
                "int8-block",
                "--image",
                str(photo),
            ]
        )
        == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| photo.png")]
    errors = {row.split("|")[2].strip(): row.split("|")[3].strip() for row in rows}
    assert errors.pop("fp32") == "reference"
    assert errors.keys() == {"int8", "int8-block"}
    assert all(0 < float(error) < 0.05 for error in errors.values())
