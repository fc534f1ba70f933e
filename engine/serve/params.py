"""A request's sampling fields -> the engine's SamplingOptions, and its room in the context."""

from __future__ import annotations

from engine.sampling import SamplingOptions, argmax_options

from .errors import ApiError
from .schema import ChatRequest

SMALLEST_TOP_P = 1e-6  # top_p 0 (allowed by OpenAI) keeps just the most likely token


def answer_room(engine, request: ChatRequest, prompt_tokens: int) -> int:
    """Tokens the answer may take: max_tokens, else what is left of the context."""
    limit = engine.context_limit
    room = limit - prompt_tokens
    if room < 1:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
            "messages",
            "context_length_exceeded",
        )
    if request.max_tokens is not None and request.max_tokens > room:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + request.max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{request.max_tokens} in the completion). Please reduce the length of the messages "
            "or completion.",
            "max_tokens",
            "context_length_exceeded",
        )
    return request.max_tokens or room


def sampling_for(engine, request: ChatRequest, max_new_tokens: int) -> SamplingOptions:
    """temperature 0 is plain argmax (as `python -m engine --greedy`: no penalties unless the
    request gives them); fields a request leaves out keep the model's defaults."""
    options: dict = {"max_new_tokens": max_new_tokens}
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        if getattr(request, name) is not None:
            options[name] = getattr(request, name)
    if request.temperature == 0:
        options = argmax_options(**options)
    else:
        if request.temperature is not None:
            options.update(temperature=request.temperature, greedy=False)
        if request.top_p is not None:
            options["top_p"] = max(request.top_p, SMALLEST_TOP_P)
    return engine.default_sampling(**options)
