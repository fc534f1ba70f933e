"""Session-wide ground truth for the engine tests: the real tokenizer and image processor from
transformers (built offline from tests/data/qwen3vl) and a tiny reference model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.tiny_checkpoint import DATA, write_tokenizer_json


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def chat_template() -> str:
    return json.loads((DATA / "chat_template.json").read_text())["chat_template"]


@pytest.fixture(scope="session")
def preprocessor_json() -> dict:
    return json.loads((DATA / "preprocessor_config.json").read_text())


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """vocab.json + merges.txt + tokenizer_config.json + the tokenizer.json saved from them."""
    out = tmp_path_factory.mktemp("qwen3vl_tokenizer")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(DATA / name, out / name)
    write_tokenizer_json(out)
    return out


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def fast_tokenizer(tokenizer_dir):
    """What the app loads: the `tokenizers` library on tokenizer.json, no transformers."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def hf_image_processor(preprocessor_json):
    """Qwen2VLImageProcessor with the PIL backend (what transformers uses without torchvision)."""
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(**preprocessor_json)
    assert processor.backend == "pil"
    assert processor.patch_size == 16 and processor.size["shortest_edge"] == 65536
    return processor


@pytest.fixture(scope="session")
def hf_processor(hf_image_processor, hf_tokenizer, chat_template):
    """Stock Qwen3VLProcessor text+image code; the subclass only drops the video processor,
    which needs torchvision."""
    from transformers import Qwen3VLProcessor

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(
                image_processor=image_processor,
                tokenizer=tokenizer,
                video_processor=None,
                chat_template=chat_template,
                **kwargs,
            )

    return ImageOnlyQwen3VLProcessor(
        image_processor=hf_image_processor, tokenizer=hf_tokenizer, chat_template=chat_template
    )


@pytest.fixture(scope="session")
def reference_model():
    from tests.fixtures.tiny_checkpoint import TinySpec, build_reference_model

    return build_reference_model(TinySpec())
