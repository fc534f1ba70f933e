"""The answer as OpenAI sends it: a chat.completion object, or chat.completion.chunk events."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from .generate import Completion


def usage(c: Completion) -> dict:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    }


def sse(data: dict | str) -> str:
    """One server-sent event; `data` is a JSON object, or the final "[DONE]"."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass
class Reply:
    """Identity shared by every piece of one answer."""

    model: str
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, c: Completion) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": c.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
            ],
            "usage": usage(c),
        }

    def chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        out = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, c: Completion) -> dict:
        """Sent last when stream_options.include_usage is set: no choices, the usage."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage(c),
        }
