"""The checkpoint's non-weight files: chat template, processor and generation settings, tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError


@dataclass(frozen=True)
class SideFiles:
    chat_template: str
    preprocessor: dict
    generation: dict
    tokenizer_json: Path
    special_tokens: dict[str, int]


def _json(path: Path, required: bool = True) -> dict:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path.parent} has no {path.name}")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name} is not a JSON object")
    return data


def _chat_template(folder: Path) -> str:
    """chat_template.jinja, else chat_template.json, else the template inside tokenizer_config.json."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    template = _json(folder / "chat_template.json", required=False).get("chat_template")
    if not template:
        template = _json(folder / "tokenizer_config.json", required=False).get("chat_template")
    if not isinstance(template, str) or not template:
        raise CheckpointError(f"{folder} has no chat template (chat_template.json / .jinja / tokenizer_config.json)")
    return template


def _special_tokens(tokenizer_json: Path) -> dict[str, int]:
    try:
        added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"tokenizer.json cannot be read: {exc}") from None
    return {t["content"]: int(t["id"]) for t in added if t.get("special")}


def read_side_files(folder: Path) -> SideFiles:
    folder = Path(folder)
    tokenizer_json = folder / "tokenizer.json"
    if not tokenizer_json.exists():
        raise CheckpointError(f"{folder} has no tokenizer.json")
    return SideFiles(
        chat_template=_chat_template(folder),
        preprocessor=_json(folder / "preprocessor_config.json"),
        generation=_json(folder / "generation_config.json", required=False),
        tokenizer_json=tokenizer_json,
        special_tokens=_special_tokens(tokenizer_json),
    )
