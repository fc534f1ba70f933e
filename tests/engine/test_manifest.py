"""The artifact format is one typed contract: what the exporter writes is what everyone reads."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.engine import Engine
from engine.errors import ArtifactError
from engine.manifest import Manifest


@pytest.fixture
def folder(tiny_int4, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_int4, copy)
    return copy


def rewrite(folder, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_written_and_loaded_are_the_same(folder, tmp_path):
    manifest = Manifest.load(folder)
    assert manifest.decoder.num_layers > 0 and manifest.vision.merge_size == 2
    assert manifest.tokens.image == 151655 and manifest.tokens.eos == (151645, 151643)
    out = tmp_path / "again"
    out.mkdir()
    manifest.write(out)
    assert Manifest.load(out) == manifest


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m["decoder"].pop("num_layers"), "lacks decoder.num_layers"),
        (lambda m: m["decoder"].update(kv_heads="8"), "decoder.kv_heads as a whole number"),
        (lambda m: m.pop("tokens"), "lacks tokens"),
        (lambda m: m.update(vision=[]), "lacks vision"),
        (lambda m: m.update(manifest_version=2), "incompatible version"),
    ],
)
def test_a_manifest_missing_what_the_engine_needs_says_so(folder, change, says):
    rewrite(folder, change)
    with pytest.raises(ArtifactError, match=says):
        Engine(folder)


def test_special_tokens_come_from_the_manifest(folder):
    """One source for each special id: the engine's prompt builder uses the manifest's."""
    engine = Engine(folder)
    assert engine.prompts.image_token_id == engine.image_token_id == Engine(folder).manifest.tokens.image
    rewrite(folder, lambda m: m["tokens"].update(im_end=151644))  # <|im_start|> as the end of turn
    assert Engine(folder).prompts.end_of_turn_id == 151644
    rewrite(folder, lambda m: m["tokens"].update(image=10_000_000))
    with pytest.raises(ArtifactError, match="has no token 10000000"):
        Engine(folder)
