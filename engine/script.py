"""Conversation files for the command line: a JSON list of {"text": ..., "images": [paths]}.

A turn with "images" and no "text" attaches those images to the next question, which reads them
at once (as the app does while the user is still typing): the next question then has only its own
words left to read. The whole file is checked before the model loads (a mistake in turn 5 should
not cost a model load and four answers), and relative image paths are taken from the file's own
folder, so a script and its pictures can be moved or run from anywhere together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EngineError

FORMAT = 'a JSON list of {"text": "...", "images": ["path", ...]}'


@dataclass(frozen=True)
class ScriptTurn:
    """A question (`text`) about `images`, or, with `text` None, images attached to the next question."""

    text: str | None
    images: list[Path] = field(default_factory=list)
    number: int = 0  # its place in the file (1-based), for messages; 0 when not from a file

    @property
    def attach_only(self) -> bool:
        return self.text is None


def read_script(path: Path) -> list[ScriptTurn]:
    """The turns of a conversation file; EngineError (one line) for anything wrong with it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read the conversation file '{path}': {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # Windows editors may start UTF-8 with a BOM
    except UnicodeDecodeError as exc:
        raise EngineError(
            f"the conversation file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} "
            f"at position {exc.start}); save it as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise EngineError(f"the conversation file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise EngineError(f"the conversation file '{path}' must be {FORMAT}")
    base = Path(path).parent
    turns = [_turn(i + 1, item, base) for i, item in enumerate(data)]
    _check_attachments_are_asked(turns)
    return turns


def _turn(number: int, item, base: Path) -> ScriptTurn:
    if not isinstance(item, dict):
        raise EngineError(f'turn {number}: each turn must be an object {{"text": ..., "images": [...]}}')
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise EngineError(f'turn {number}: "text" must be a string (the question)')
    images = item.get("images")
    if images is None:
        images = []
    if isinstance(images, str):
        raise EngineError(f'turn {number}: "images" must be a list of paths, like {json.dumps([images])}')
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise EngineError(f'turn {number}: "images" must be a list of paths')
    if text is None and not images:
        raise EngineError(f'turn {number}: give "text" (a question) or "images" (to attach to the next question)')
    return ScriptTurn(text, [_resolve(number, p, base) for p in images], number)


def _check_attachments_are_asked(turns: list[ScriptTurn]) -> None:
    """Images attached after the last question would be read for nothing: say so before loading."""
    trailing = []
    for turn in reversed(turns):
        if not turn.attach_only:
            break
        trailing.append(turn)
    if trailing:
        first = trailing[-1].number
        raise EngineError(
            f'turn {first}: its images are attached to the next question, but no turn with "text" follows'
        )


def _resolve(number: int, given: str, base: Path) -> Path:
    """An image path as written in the file, taken from the file's folder when relative."""
    path = Path(given).expanduser()
    resolved = path if path.is_absolute() else base / path
    if not resolved.exists():
        where = "" if path.is_absolute() else f" (looked in {resolved.parent.resolve()})"
        raise EngineError(f"turn {number}: the image '{given}' does not exist{where}")
    return resolved
