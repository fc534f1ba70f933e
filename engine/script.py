"""Conversation files for the command line: a JSON list of {"text": ..., "images": [paths]}.

The whole file is checked before the model loads (a mistake in turn 5 should not cost a model
load and four answers), and relative image paths are taken from the file's own folder, so a
script and its pictures can be moved or run from anywhere together.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EngineError

FORMAT = 'a JSON list of {"text": "...", "images": ["path", ...]}'


@dataclass(frozen=True)
class ScriptTurn:
    text: str
    images: list[Path] = field(default_factory=list)


def read_script(path: Path) -> list[ScriptTurn]:
    """The turns of a conversation file; EngineError (one line) for anything wrong with it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read the conversation file '{path}': {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # Windows editors may start UTF-8 with a BOM
    except UnicodeDecodeError as exc:
        raise EngineError(f"the conversation file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                          f"at position {exc.start}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EngineError(f"the conversation file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise EngineError(f"the conversation file '{path}' must be {FORMAT}")
    base = Path(path).parent
    return [_turn(i + 1, item, base) for i, item in enumerate(data)]


def _turn(number: int, item, base: Path) -> ScriptTurn:
    if not isinstance(item, dict):
        raise EngineError(f'turn {number}: each turn must be an object {{"text": ..., "images": [...]}}')
    text = item.get("text")
    if not isinstance(text, str):
        raise EngineError(f'turn {number}: "text" must be a string (the question)')
    images = item.get("images")
    if images is None:
        images = []
    if isinstance(images, str):
        raise EngineError(f'turn {number}: "images" must be a list of paths, like {json.dumps([images])}')
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise EngineError(f'turn {number}: "images" must be a list of paths')
    return ScriptTurn(text, [_resolve(number, p, base) for p in images])


def _resolve(number: int, given: str, base: Path) -> Path:
    """An image path as written in the file, taken from the file's folder when relative."""
    path = Path(given).expanduser()
    resolved = path if path.is_absolute() else base / path
    if not resolved.exists():
        where = "" if path.is_absolute() else f" (looked in {resolved.parent.resolve()})"
        raise EngineError(f"turn {number}: the image '{given}' does not exist{where}")
    return resolved
