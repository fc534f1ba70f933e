"""A chat-completions request body -> a validated ChatRequest, or an ApiError naming the field.

Only what the engine can honour is accepted: one choice, text answers, images inline as data:
URLs (a remote URL or a file path would mean fetching or reading something on the caller's
behalf; the server does neither). Unknown harmless fields (user, metadata, ...) are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .limits import Limits

_DATA_URL = re.compile(
    r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,(?P<data>.*)\Z", re.DOTALL | re.IGNORECASE
)
_DETAIL = {"auto": None, "low": "standard", "high": "high"}  # OpenAI's detail -> the engine's presets
_ROLES = {"system", "developer", "user", "assistant"}


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    data: bytes  # the image file's bytes, decoded from the data: URL
    detail: str | None  # "standard" / "high", None for the server's default
    param: str  # where it was in the request, for error messages


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant" ("developer" is read as system)
    parts: tuple[TextPart | ImagePart, ...]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @property
    def images(self) -> list[ImagePart]:
        return [p for m in self.messages for p in m.parts if isinstance(p, ImagePart)]


def parse_chat_request(body: bytes, limits: Limits = Limits()) -> ChatRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    model = _required(data, "model", str)
    raw_messages = _required(data, "messages", list)
    if not raw_messages:
        raise ApiError(400, "'messages' must hold at least one message.", "messages", "invalid_value")
    if len(raw_messages) > limits.max_messages:
        raise ApiError(
            400,
            f"At most {limits.max_messages} messages per request (got {len(raw_messages)}).",
            "messages",
            "too_many_messages",
        )
    messages = tuple(_message(m, f"messages[{i}]", i, limits) for i, m in enumerate(raw_messages))
    images = sum(isinstance(p, ImagePart) for m in messages for p in m.parts)
    if images > limits.max_images:
        raise ApiError(
            400, f"At most {limits.max_images} images per request (got {images}).", "messages", "too_many_images"
        )
    _refuse_unsupported(data)
    stream = _optional(data, "stream", bool, False)
    options = _optional(data, "stream_options", dict, None) or {}
    max_tokens = _optional(data, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _optional(data, "max_tokens", int, None)
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"max_tokens must be at least 1 (got {max_tokens}).", "max_tokens", "invalid_value")
    seed = _optional(data, "seed", int, None)
    if seed is not None and not 0 <= seed < 2**63:  # numpy's generators take no negative seed
        raise ApiError(400, f"seed must be 0 or more (got {seed}).", "seed", "invalid_value")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(stream and _optional(options, "include_usage", bool, False)),
        temperature=_number(data, "temperature", 0.0, 2.0),
        top_p=_number(data, "top_p", 0.0, 1.0),
        seed=seed,
        max_tokens=max_tokens,
        stop=_stop(data.get("stop"), limits),
        presence_penalty=_number(data, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_number(data, "frequency_penalty", -2.0, 2.0),
    )


# ---------------------------------------------------------------------------------------------


def _type_name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_type_name(k) for k in kind)
    return {
        str: "a string",
        list: "an array",
        dict: "an object",
        bool: "true or false",
        int: "an integer",
        float: "a number",
    }[kind]


def _check_type(value, kind, param: str):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    accepted = kinds + tuple(int for k in kinds if k is float)  # JSON numbers may lack a fraction
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in kinds):
        raise ApiError(400, f"'{param}' must be {_type_name(kind)}.", param, "invalid_type")
    return value


def _required(data: dict, key: str, kind, param: str | None = None):
    param = param or key
    if key not in data or data[key] is None:
        raise ApiError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    return _check_type(data[key], kind, param)


def _optional(data: dict, key: str, kind, default):
    if data.get(key) is None:
        return default
    return _check_type(data[key], kind, key)


def _number(data: dict, key: str, low: float, high: float) -> float | None:
    value = _optional(data, key, float, None)
    if value is not None and not low <= value <= high:
        raise ApiError(400, f"'{key}' must be between {low:g} and {high:g} (got {value}).", key, "invalid_value")
    return None if value is None else float(value)


def _stop(value, limits: Limits) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, "'stop' must be a string or an array of strings.", "stop", "invalid_type")
    if len(stops) > limits.max_stop:
        raise ApiError(400, f"At most {limits.max_stop} stop sequences (got {len(stops)}).", "stop", "invalid_value")
    return tuple(s for s in stops if s)


def _refuse_unsupported(data: dict) -> None:
    """Options whose meaning the server cannot honour are refused rather than silently ignored."""
    if data.get("n") not in (None, 1):
        raise ApiError(400, "Only n=1 is supported: the server writes one answer at a time.", "n", "unsupported_value")
    for key in ("tools", "functions"):
        if data.get(key):
            raise ApiError(400, f"'{key}' is not supported by this server.", key, "unsupported_parameter")
    if data.get("logprobs"):
        raise ApiError(400, "'logprobs' is not supported by this server.", "logprobs", "unsupported_parameter")
    fmt = data.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise ApiError(400, "Only the text response format is supported.", "response_format", "unsupported_value")


def _message(raw: Any, param: str, index: int, limits: Limits) -> ChatMessage:
    if not isinstance(raw, dict):
        raise ApiError(400, f"'{param}' must be an object with 'role' and 'content'.", param, "invalid_type")
    role = _required(raw, "role", str, f"{param}.role")
    if role not in _ROLES:
        raise ApiError(
            400,
            f"'{param}.role' must be one of system, developer, user, assistant (got '{role}').",
            f"{param}.role",
            "invalid_value",
        )
    role = "system" if role == "developer" else role
    if role == "system" and index != 0:
        raise ApiError(400, "A system message is only allowed as the first message.", f"{param}.role", "invalid_value")
    if raw.get("tool_calls"):
        raise ApiError(
            400, "Tool calls are not supported by this server.", f"{param}.tool_calls", "unsupported_parameter"
        )
    content = _required(raw, "content", (str, list), f"{param}.content")
    if isinstance(content, str):
        return ChatMessage(role, (TextPart(content),))
    parts = tuple(_part(p, f"{param}.content[{j}]", role, limits) for j, p in enumerate(content))
    return ChatMessage(role, parts)


def _part(raw: Any, param: str, role: str, limits: Limits) -> TextPart | ImagePart:
    if not isinstance(raw, dict):
        raise ApiError(400, f"'{param}' must be an object with a 'type'.", param, "invalid_type")
    kind = _required(raw, "type", str, f"{param}.type")
    if kind in ("text", "refusal") and (kind == "text" or role == "assistant"):
        return TextPart(_required(raw, kind, str, f"{param}.{kind}"))
    if kind == "image_url":
        if role != "user":
            raise ApiError(400, f"Images can only be sent in user messages ({param}).", param, "invalid_value")
        image = _required(raw, "image_url", dict, f"{param}.image_url")
        url = _required(image, "url", str, f"{param}.image_url.url")
        detail = image.get("detail", "auto")
        if detail not in _DETAIL:
            raise ApiError(
                400,
                f"'{param}.image_url.detail' must be auto, low or high (got {detail!r}).",
                f"{param}.image_url.detail",
                "invalid_value",
            )
        return ImagePart(_image_bytes(url, f"{param}.image_url.url", limits), _DETAIL[detail], param)
    raise ApiError(
        400,
        f"Content of type '{kind}' is not supported here ({param}); send text, or images as image_url data: URLs.",
        f"{param}.type",
        "unsupported_value",
    )


def _image_bytes(url: str, param: str, limits: Limits) -> bytes:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme != "data":
        where = "a remote URL" if scheme in ("http", "https", "ftp") else "a file path or URL"
        raise ApiError(
            400,
            f"The image at {param} is {where}. Iris does not download or open files for a request: "
            "nothing leaves this computer. Send the image inline as a data: URL "
            "(data:image/png;base64,...).",
            param,
            "image_url_not_supported",
        )
    match = _DATA_URL.match(url)
    if match is None:
        raise ApiError(
            400,
            f"The image at {param} is not a base64 data: URL (data:image/png;base64,...).",
            param,
            "invalid_image_url",
        )
    if match["type"] and not match["type"].lower().startswith("image/"):
        raise ApiError(
            400, f"The data: URL at {param} holds {match['type']}, not an image.", param, "invalid_image_url"
        )
    encoded = match["data"].strip()
    if len(encoded) // 4 * 3 > limits.max_image_bytes:
        raise ApiError(
            400, f"The image at {param} is larger than {limits.max_image_bytes // 2**20} MiB.", param, "image_too_large"
        )
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"The image at {param} is not valid base64.", param, "invalid_image_url") from None
