"""Saved conversations: one folder per chat in the data folder, JSON plus copies of its images;
their Markdown export and the one-line stats under an answer. Qt-free: the widgets that show
chats are in ui/chats_panel.py.

Images are copied (named by content hash) so a chat still opens after the user moves or deletes
the original files; Markdown export copies them next to the .md file for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FORMAT_VERSION = 1
TITLE_LENGTH = 60


class HistoryError(Exception):
    """A saved conversation cannot be read or written; the message is for the user."""


@dataclass
class TurnRecord:
    text: str
    images: list[str] = field(default_factory=list)  # names inside the chat's images/ folder
    answer: str = ""
    stats: dict | None = None
    error: str = ""


@dataclass
class ConversationRecord:
    id: str
    title: str
    created: str
    updated: str
    model: str = ""
    turns: list[TurnRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    updated: str
    turn_count: int


def stats_to_dict(stats) -> dict:
    """A TurnStats as plain JSON values, without the (long, private) token ids."""
    data = asdict(stats)
    data.pop("token_ids", None)
    return data


def describe_stats(stats: dict | None) -> str:
    """One line a person can read: image tokens, time to first token (and whether the image was
    read before the question came), speed, why it stopped."""
    if not stats:
        return ""
    parts = []
    if stats.get("image_tokens"):
        parts.append(f"{stats['image_tokens']} image tokens")
    if stats.get("time_to_first_token"):
        parts.append(f"first token {stats['time_to_first_token']:.2f} s")
    if stats.get("ahead_tokens") and stats.get("image_tokens"):
        parts.append("image read while you typed")
    if stats.get("decode_tokens_per_second"):
        parts.append(f"{stats['decode_tokens_per_second']:.1f} tokens/s")
    parts.append(f"{stats.get('new_tokens', 0)} tokens")
    reason = {
        "cancelled": "stopped",
        "max_new_tokens": "hit the length limit",
        "context_full": "context full",
    }.get(stats.get("stop_reason", ""))
    if reason:
        parts.append(reason)
    return " · ".join(parts)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def title_for(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


class HistoryStore:
    """Reads and writes conversations under `root` (normally ui.paths.conversations_dir())."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def new_record(self, model: str = "") -> ConversationRecord:
        now = _now()
        return ConversationRecord(uuid.uuid4().hex[:12], "New chat", now, now, model)

    def folder(self, record_id: str) -> Path:
        return self.root / record_id

    def image_path(self, record_id: str, name: str) -> Path:
        return self.folder(record_id) / "images" / name

    def add_image(self, record: ConversationRecord, source: Path) -> str:
        """Copy `source` into the chat's folder (once per content) and return its stored name."""
        data = Path(source).read_bytes()
        name = hashlib.sha256(data).hexdigest()[:16] + (Path(source).suffix.lower() or ".png")
        target = self.image_path(record.id, name)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return name

    def save(self, record: ConversationRecord) -> None:
        record.updated = _now()
        if record.turns and record.title == "New chat":
            record.title = title_for(record.turns[0].text) or "Image chat"
        folder = self.folder(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"version": FORMAT_VERSION, **asdict(record)}
        temporary = folder / "conversation.json.tmp"
        try:
            temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False), "utf-8")
            os.replace(temporary, folder / "conversation.json")
        except OSError as error:
            raise HistoryError(f"Could not save the conversation in {folder}: {error}") from error

    def load(self, record_id: str) -> ConversationRecord:
        path = self.folder(record_id) / "conversation.json"
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise HistoryError(f"{path} was saved by another version of Iris.")
            turns = [TurnRecord(**turn) for turn in data["turns"]]
            return ConversationRecord(
                data["id"],
                data["title"],
                data["created"],
                data["updated"],
                data.get("model", ""),
                turns,
            )
        except HistoryError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise HistoryError(f"Could not open the saved conversation {path}: {error}") from error

    def list(self) -> list[ConversationSummary]:
        """Every readable saved chat, newest first; unreadable folders are skipped."""
        summaries = []
        for path in self.root.glob("*/conversation.json"):
            try:
                data = json.loads(path.read_text("utf-8"))
                summaries.append(ConversationSummary(data["id"], data["title"], data["updated"], len(data["turns"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(summaries, key=lambda s: s.updated, reverse=True)

    def delete(self, record_id: str) -> None:
        shutil.rmtree(self.folder(record_id), ignore_errors=True)


def export_markdown(record: ConversationRecord, store: HistoryStore, out_path: Path) -> Path:
    """Write the chat as Markdown; its images go to '<name>_images/' beside the file."""
    out_path = Path(out_path)
    image_folder = out_path.with_name(out_path.stem + "_images")
    lines = [f"# {record.title}", "", f"*Exported from Iris · {record.model or 'model'} · {record.updated}*", ""]
    for turn in record.turns:
        lines += ["## You", ""]
        for name in turn.images:
            source = store.image_path(record.id, name)
            if source.exists():
                image_folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, image_folder / name)
                lines += [f"![image]({image_folder.name}/{name})", ""]
        lines += [turn.text, "", "## Iris", "", turn.answer or f"*{turn.error or 'No answer.'}*", ""]
        if turn.stats:
            lines += [f"<sub>{describe_stats(turn.stats)}</sub>", ""]
    try:
        out_path.write_text("\n".join(lines), "utf-8")
    except OSError as error:
        raise HistoryError(f"Could not write {out_path}: {error}") from error
    return out_path
