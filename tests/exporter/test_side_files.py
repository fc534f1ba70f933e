"""The checkpoint's chat template is found where transformers looks for it, newest layout first."""

from __future__ import annotations

import json

import pytest

from exporter.errors import CheckpointError
from exporter.side_files import read_side_files


def test_the_chat_template_comes_from_jinja_then_json_then_tokenizer_config(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": []}))
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no chat template"):
        read_side_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from tokenizer_config"}))
    assert read_side_files(tmp_path).chat_template == "from tokenizer_config"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "from chat_template.json"}))
    assert read_side_files(tmp_path).chat_template == "from chat_template.json"
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].role }}")  # the transformers 5 layout
    assert read_side_files(tmp_path).chat_template == "{{ messages[0].role }}"
