"""The routes: GET /v1/models and POST /v1/chat/completions (plain or streamed), on Starlette.

A request's body is checked before it takes a place in line (a full line answers 429 at once);
then it is tokenized and its images decoded, and bad input gives its place back and is answered
with OpenAI's error object. Generation runs on the scheduler's thread;
a client that goes away (stream closed, or connection dropped while waiting) sets its cancel
flag, and the engine stops within one step.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .errors import ApiError
from .generate import Completion, complete
from .guard import Guard, HostPolicy
from .limits import Limits
from .params import answer_room, sampling_for
from .prefix import SlotPool
from .prompt import build_prompt
from .scheduler import Busy, Scheduler
from .schema import parse_chat_request
from .wire import Reply, sse


@dataclass
class Service:
    """What the routes share: the engine, its cache slots and the line of requests."""

    engine: object
    model_id: str
    limits: Limits = Limits()
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.pool = SlotPool(self.engine.decoder.new_cache, self.limits.slots)
        self.scheduler = Scheduler(self.limits.max_waiting)
        self.last: Completion | None = None  # the latest finished completion (tests, logs)
        self._cancels: set[threading.Event] = set()
        self._cancels_lock = threading.Lock()

    def cancel_all(self) -> None:
        """Stop whatever is running or waiting (the server is stopping)."""
        with self._cancels_lock:
            for event in self._cancels:
                event.set()

    def run(self, prompt, sampling, stops, cancel: threading.Event, on_text=lambda text: None) -> Completion:
        with self._cancels_lock:
            self._cancels.add(cancel)
        try:
            result = complete(self.engine, self.pool, prompt, sampling, stops, cancel, on_text)
            self.last = result
            return result
        finally:
            with self._cancels_lock:
                self._cancels.discard(cancel)


def create_app(service: Service, policy: HostPolicy, api_key: str | None = None):
    """The ASGI application: the routes behind the host/origin/key guard."""

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(service)]})

    async def chat_completions(request: Request) -> Response:
        body = await _read_body(request, service.limits.max_body_bytes)
        chat = parse_chat_request(body, service.limits)
        ticket = service.scheduler.reserve()
        try:
            prompt = await run_in_threadpool(build_prompt, service.engine, chat, service.limits)
            sampling = sampling_for(service.engine, chat, answer_room(service.engine, chat, len(prompt.tokens)))
        except BaseException:
            ticket.release()
            raise
        reply, cancel = Reply(service.model_id, chat.include_usage), threading.Event()
        answer = functools.partial(service.run, prompt, sampling, chat.stop, cancel)
        if chat.stream:
            return _streamed(service, ticket, answer, reply, cancel)
        return await _whole(service, ticket, answer, reply, cancel, request)

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    handlers = {ApiError: _api_error, Busy: _busy, HTTPException: _http_error, Exception: _server_error}
    return Guard(Starlette(routes=routes, exception_handlers=handlers), policy, api_key)


def _streamed(service: Service, ticket, answer, reply: Reply, cancel: threading.Event) -> Response:
    """Run `answer` in its turn, sending its text as server-sent events as it comes."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def post(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopped)
            cancel.set()

    def job() -> None:
        try:
            post(("done", answer(lambda text: post(("text", text)))))
        except Exception as exc:  # reported in the stream: the status line is already sent
            post(("error", exc))

    service.scheduler.submit(ticket, job)
    return StreamingResponse(
        _events(reply, queue, cancel),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _whole(service: Service, ticket, answer, reply: Reply, cancel: threading.Event, request: Request) -> Response:
    """Run `answer` in its turn and send it whole, unless the client leaves first (then stop it)."""
    done = asyncio.wrap_future(service.scheduler.submit(ticket, answer))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not done.done():
            cancel.set()  # the client left (or the server is stopping): stop generating for nobody
        gone.cancel()
    if not done.done():
        return Response(status_code=499)  # nobody reads it
    if done.result().finish_reason == "cancelled":
        raise _stopped()
    return JSONResponse(reply.whole(done.result()))


async def _events(reply: Reply, queue: asyncio.Queue, cancel: threading.Event):
    """SSE chunks as OpenAI sends them: role, content pieces, finish reason, [usage], [DONE]."""
    try:
        yield sse(reply.chunk({"role": "assistant", "content": ""}))
        while True:
            kind, value = await queue.get()
            if kind == "text":
                yield sse(reply.chunk({"content": value}))
            elif kind == "done" and value.finish_reason == "cancelled":  # the server is stopping
                yield sse(_stopped().body())
                return
            elif kind == "done":
                yield sse(reply.chunk({}, value.finish_reason))
                if reply.include_usage:
                    yield sse(reply.usage_chunk(value))
                yield sse("[DONE]")
                return
            else:
                yield sse(_error_for(value).body())
                return
    finally:
        cancel.set()  # normally a no-op; on a disconnect Starlette cancels this generator


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "The client closed the connection while sending the request.") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit // 2**20} MiB.", code="request_too_large")


def _stopped() -> ApiError:
    return ApiError(503, "The server stopped before the answer was complete.", code="server_stopping")


def _model_card(service: Service) -> dict:
    return {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "iris"}


def _error_for(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    from engine.errors import EngineError

    if isinstance(exc, EngineError):
        return ApiError(500, str(exc), code="engine_error")
    return ApiError(500, f"The server failed while answering: {exc!r}", code="server_error")


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def _busy(request: Request, exc: Busy) -> Response:
    error = ApiError(
        429,
        f"The model is busy answering other requests; try again in {exc.retry_after} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(exc.retry_after)},
    )
    return await _api_error(request, error)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    messages = {
        404: f"Unknown URL: {request.method} {request.url.path}. This server offers GET /v1/models and "
        "POST /v1/chat/completions.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }
    error = ApiError(
        exc.status_code,
        messages.get(exc.status_code, str(exc.detail)),
        code={404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code),
    )
    return await _api_error(request, error)


async def _server_error(request: Request, exc: Exception) -> Response:
    return await _api_error(request, _error_for(exc))
