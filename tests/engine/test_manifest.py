"""The artifact format is one typed contract: what the exporter writes is what everyone reads."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.engine import Engine
from engine.errors import ArtifactError
from engine.manifest import MANIFEST_VERSION, Manifest
from engine.tokens import ImageGrid, Tokens


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
    assert manifest.image_processor.patch_size == 16 and manifest.image_processor.image_mean == (0.5, 0.5, 0.5)
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
        (lambda m: m["tokens"].update(eos=["<|im_end|>"]), "tokens.eos as a whole number"),
        (lambda m: m.update(vision=[]), "lacks vision"),
        (lambda m: m["vision"].pop("in_channels"), "lacks vision.in_channels"),
        (lambda m: m["weights"].pop("int8_weight_max"), "lacks weights.int8_weight_max"),
        (lambda m: m["image_processor"].update(image_std=[0.5, 0.5]), "image_processor.image_std"),
        (lambda m: m["image_processor"].update(merge_size=4), "merge_size 4 but the vision tower has 2"),
        (lambda m: m["image_processor"].update(patch_size=14), "patch_size 14 but the vision tower has 16"),
        (lambda m: m.update(manifest_version=MANIFEST_VERSION - 1), "incompatible version.*Convert it again"),
    ],
)
def test_a_manifest_missing_what_the_engine_needs_says_so(folder, change, says):
    rewrite(folder, change)
    with pytest.raises(ArtifactError, match=says):
        Manifest.load(folder)


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m["decoder"].update(vocab_size=m["decoder"]["vocab_size"] + 1), "logits"),
        (lambda m: m["decoder"].update(kv_dtype="fp32"), "keeps its cache as float16"),
        (lambda m: m["vision"].update(input_patch_dim=3 * 14 * 14), "values per patch"),
        (lambda m: m["tokens"].update(eos=[10_000_000]), "end-of-answer token"),
    ],
)
def test_a_manifest_that_does_not_describe_its_graphs_is_refused_at_load(folder, change, says):
    rewrite(folder, change)
    Manifest.load(folder)  # well formed: only the graphs can tell
    with pytest.raises(ArtifactError, match=says):
        Engine(folder)


def test_special_tokens_come_from_the_manifest(folder):
    """The prompt builder numbers image slots and turn ends as the manifest does."""
    video_pad, im_start = 151656, 151644
    rewrite(folder, lambda m: m.update(chat_template=m["chat_template"].replace("<|image_pad|>", "<|video_pad|>")))
    rewrite(folder, lambda m: m["tokens"].update(image=video_pad, im_end=im_start))
    prompts = Engine(folder).prompts
    assert prompts.image_token_id == video_pad and prompts.end_of_turn_id == im_start
    tokens: Tokens = prompts.encode_conversation(
        [{"role": "user", "content": [{"type": "image"}]}], [ImageGrid((1, 2, 6), 2)]
    )
    assert [tokens.ids[run.start : run.end] for run in tokens.images] == [(video_pad,) * 3]
    rewrite(folder, lambda m: m["tokens"].update(image=151655))  # the template no longer writes it
    with pytest.raises(ArtifactError, match="chat template cannot hold an image"):
        Engine(folder)
    rewrite(folder, lambda m: m["tokens"].update(image=10_000_000))
    with pytest.raises(ArtifactError, match="has no token 10000000"):
        Engine(folder)
