"""The local server end to end, through the official `openai` client, on the tiny exported model.

Greedy answers must equal `python -m engine --greedy`; follow-ups must reuse the cached prefix
and still answer exactly as a cold read would; bad requests get OpenAI's error object; a client
that leaves frees the engine; a full line gets 429.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time

import openai
import pytest

from engine.__main__ import main as engine_cli
from engine.engine import Engine
from engine.events import Stage, StatusEvent, TextEvent, TurnStats
from engine.sampling import SamplingOptions
from engine.serve.limits import Limits
from engine.serve.prefix import common_prefix
from engine.serve.server import LocalServer
from tests.reference import random_image

QUESTION = "Describe this image."


@pytest.fixture(scope="module")
def engine(tiny_fp32):
    return Engine(tiny_fp32)


@pytest.fixture
def serve(engine):
    """Start servers on free ports (sharing the module's engine); all stopped after the test."""
    servers = []

    def start(**kwargs) -> LocalServer:
        limits = kwargs.pop("limits", Limits())
        server = LocalServer(engine, port=0, limits=limits, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def client_for(server: LocalServer, api_key: str = "unused", timeout: float = 60, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, timeout=timeout, **kwargs)


def png_bytes(seed: int = 1) -> bytes:
    buf = io.BytesIO()
    random_image(300, 200, seed).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def image_message(text: str, data: bytes) -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": data_url(data)}}, {"type": "text", "text": text}],
    }


def cli_greedy(model_dir, capsys, prompt: str, tokens: int, image=None) -> dict:
    args = [str(model_dir), "--prompt", prompt, "--greedy", "--max-new-tokens", str(tokens), "--json"]
    if image is not None:
        args += ["--image", str(image)]
    capsys.readouterr()
    assert engine_cli(args) == 0
    return json.loads(capsys.readouterr().out)


def streamed(client, **request) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(stream=True, **request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# -- answers -----------------------------------------------------------------------------------


def test_models_lists_the_served_model(serve, tiny_fp32):
    models = client_for(serve()).models.list()
    assert [m.id for m in models.data] == [tiny_fp32.name]


def test_greedy_answers_plain_and_streamed_equal_the_command_line(serve, engine, tiny_fp32, capsys):
    expected = cli_greedy(tiny_fp32, capsys, "Write a haiku about the sea.", 16)
    server = serve()
    client = client_for(server)
    request = dict(
        model="iris",
        messages=[{"role": "user", "content": "Write a haiku about the sea."}],
        temperature=0,
        max_tokens=16,
    )
    plain = client.chat.completions.create(**request)
    assert server.service.last.token_ids == expected["token_ids"]
    assert plain.choices[0].message.content == expected["text"]
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == ("stop" if expected["stats"]["stop_reason"] == "eos" else "length")
    assert plain.usage.prompt_tokens == expected["stats"]["prompt_tokens"]
    assert plain.usage.completion_tokens == len([t for t in expected["token_ids"] if t not in engine.eos_ids])

    text, chunks = streamed(client, stream_options={"include_usage": True}, **request)
    assert text == expected["text"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    # the same question again: all but the last prompt token come from the cache
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == plain.usage.prompt_tokens - 1


def test_an_image_as_a_data_url_answers_like_the_command_line(serve, tiny_fp32, tmp_path, capsys):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())
    expected = cli_greedy(tiny_fp32, capsys, QUESTION, 12, image=path)
    server = serve()
    answer = client_for(server).chat.completions.create(
        model="iris", messages=[image_message(QUESTION, path.read_bytes())], temperature=0, max_tokens=12
    )
    assert server.service.last.token_ids == expected["token_ids"]
    assert answer.choices[0].message.content == expected["text"]
    assert answer.usage.prompt_tokens == expected["stats"]["prompt_tokens"]  # 70 image tokens included


def test_a_follow_up_reads_only_its_new_tokens_and_answers_as_a_cold_read(serve, engine, monkeypatch):
    server = serve()
    client = client_for(server)
    history = [{"role": "system", "content": "You are terse."}, image_message(QUESTION, png_bytes())]
    first = client.chat.completions.create(model="iris", messages=history, temperature=0, max_tokens=8)
    first_ids = list(server.service.pool.slots[0].keys) or list(server.service.pool.slots[1].keys)
    follow_up = history + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And the colours?"},
    ]

    read = []
    original = engine.decoder.prefill_steps

    def counting(ids, *args, **kwargs):
        read.append(len(ids))
        return original(ids, *args, **kwargs)

    monkeypatch.setattr(engine.decoder, "prefill_steps", counting)
    warm = client.chat.completions.create(model="iris", messages=follow_up, temperature=0, max_tokens=8)
    cached = warm.usage.prompt_tokens_details.cached_tokens
    prompt = server.service.last
    # The cache kept the whole first prompt (image included) and what of the answer re-tokenizes the same.
    follow_keys = _prompt_keys(server, follow_up)
    assert cached == common_prefix(first_ids, follow_keys) > first.usage.prompt_tokens
    assert read == [warm.usage.prompt_tokens - cached]
    assert prompt.cached_tokens == cached

    cold_server = serve()  # fresh slots: reads everything
    cold = client_for(cold_server).chat.completions.create(
        model="iris", messages=follow_up, temperature=0, max_tokens=8
    )
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert cold_server.service.last.token_ids == server.service.last.token_ids
    assert cold.choices[0].message.content == warm.choices[0].message.content


def _prompt_keys(server, messages) -> list:
    from engine.serve.prompt import build_prompt
    from engine.serve.schema import parse_chat_request

    request = parse_chat_request(json.dumps({"model": "iris", "messages": messages}).encode())
    return build_prompt(server.service.engine, request).keys


def test_a_different_image_in_the_same_place_is_read_again(serve):
    server = serve(limits=Limits(slots=1))
    client = client_for(server)
    client.chat.completions.create(
        model="iris", messages=[image_message(QUESTION, png_bytes(1))], temperature=0, max_tokens=2
    )
    other = client.chat.completions.create(
        model="iris", messages=[image_message(QUESTION, png_bytes(2))], temperature=0, max_tokens=2
    )
    # Only the tokens before the image (<|im_start|>user\n<|vision_start|>) can be shared.
    assert other.usage.prompt_tokens_details.cached_tokens == 4


def test_stop_sequences_seed_and_penalties(serve, tiny_fp32, capsys):
    expected = cli_greedy(tiny_fp32, capsys, "Count to ten.", 16)["text"]
    client = client_for(serve())
    base = dict(model="iris", messages=[{"role": "user", "content": "Count to ten."}], max_tokens=16)
    cut = len(expected) // 2
    stop = expected[cut : cut + 3]
    stopped = client.chat.completions.create(temperature=0, stop=[stop], **base)
    assert stopped.choices[0].message.content == expected[: expected.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    text, _ = streamed(client, temperature=0, stop=stop, **base)
    assert text == expected[: expected.find(stop)]

    sampled = [
        client.chat.completions.create(temperature=1.0, top_p=0.9, seed=7, **base).choices[0].message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    penalised = client.chat.completions.create(temperature=0, frequency_penalty=2.0, presence_penalty=2.0, **base)
    assert penalised.usage.completion_tokens >= 1


# -- errors ------------------------------------------------------------------------------------


def raw_request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        connection.close()


def assert_openai_error(body, code: str | None = None):
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error


def test_bad_requests_get_openai_shaped_errors(serve):
    server = serve(limits=Limits(max_waiting=0))  # a place in line kept by a refusal would refuse the next request
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as bad_image:
        client.chat.completions.create(model="iris", messages=[image_message(QUESTION, b"not a picture")])
    assert bad_image.value.code == "invalid_image" and "content[0]" in bad_image.value.message
    with pytest.raises(openai.BadRequestError) as remote:
        client.chat.completions.create(
            model="iris",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                }
            ],
        )
    assert remote.value.code == "image_url_not_supported" and "nothing leaves this computer" in remote.value.message
    with pytest.raises(openai.BadRequestError) as path:
        client.chat.completions.create(
            model="iris",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
        )
    assert path.value.code == "image_url_not_supported"
    with pytest.raises(openai.BadRequestError) as missing:
        client.chat.completions.create(model="iris", messages=[{"role": "user"}])
    assert missing.value.code == "missing_required_parameter" and missing.value.param == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="iris", messages=[{"role": "user", "content": "hi"}], max_tokens=10**6)
    assert too_long.value.code == "context_length_exceeded"

    status, _, body = raw_request(server, "POST", "/v1/chat/completions", b'{"model": "iris", "messages": [')
    assert status == 400
    assert_openai_error(body, "invalid_json")
    status, _, body = raw_request(server, "POST", "/v1/chat/completions", b'{"messages": []}')
    assert status == 400
    assert_openai_error(body, "missing_required_parameter")
    status, _, body = raw_request(server, "GET", "/v1/nothing-here")
    assert status == 404
    assert_openai_error(body, "unknown_url")
    answer = client.chat.completions.create(model="iris", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_body_size_is_limited(serve):
    server = serve(limits=Limits(max_body_bytes=1000))
    status, _, body = raw_request(server, "POST", "/v1/chat/completions", b"{" + b" " * 2000 + b"}")
    assert status == 413
    assert_openai_error(body, "request_too_large")


def test_host_and_origin_headers_from_elsewhere_are_refused(serve):
    server = serve()
    for headers in (
        {"Host": "attacker.example:8088"},
        {"Host": "localhost.attacker.example"},
        {"Origin": "http://attacker.example"},
    ):
        status, _, body = raw_request(server, "GET", "/v1/models", headers=headers)
        assert status == 403, headers
        assert_openai_error(body)
    for headers in ({"Host": f"localhost:{server.port}"}, {"Origin": "http://127.0.0.1:3000"}):
        assert raw_request(server, "GET", "/v1/models", headers=headers)[0] == 200


def test_a_key_is_required_when_set_and_for_other_hosts(serve, engine):
    server = serve(api_key="s3cret")
    with pytest.raises(openai.AuthenticationError) as wrong:
        client_for(server, api_key="wrong").models.list()
    assert wrong.value.code == "invalid_api_key" and wrong.value.status_code == 401
    status, _, body = raw_request(server, "GET", "/v1/models")
    assert status == 401
    assert_openai_error(body, "invalid_api_key")
    assert client_for(server, api_key="s3cret").models.list().data
    with pytest.raises(ValueError, match="API key"):
        LocalServer(engine, host="0.0.0.0", port=0)


# -- one CPU, many callers ---------------------------------------------------------------------


@pytest.fixture
def slow_decoding(engine, monkeypatch):
    """Each decoder step takes 20 ms more, so a long answer is still running when the test acts."""
    original = engine.decoder.forward

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.decoder, "forward", slow)


LONG = dict(
    model="iris", messages=[{"role": "user", "content": "Tell me a long story."}], temperature=0, max_tokens=2000
)


def assert_stopped_for_nobody(server):
    """The answer nobody waits for any more ends at once: the next request, which waits in line
    behind it, is answered well before that answer (2000 tokens at 20 ms each) could have finished."""
    started = time.monotonic()
    after = client_for(server, timeout=10.0).chat.completions.create(**{**LONG, "max_tokens": 2})
    assert after.choices[0].message.content is not None and time.monotonic() - started < 10


def test_a_client_that_disconnects_mid_stream_frees_the_engine(serve, engine, slow_decoding):
    server = serve()
    client = client_for(server)
    stream = client.chat.completions.create(stream=True, **LONG)
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    stream.close()
    assert_stopped_for_nobody(server)
    assert not engine.turn_taking.busy


def test_a_client_that_gives_up_on_a_plain_answer_frees_the_engine(serve, engine, slow_decoding):
    server = serve()
    impatient = client_for(server, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(**LONG)
    assert_stopped_for_nobody(server)


def test_a_full_line_answers_429_with_retry_after(serve, slow_decoding):
    server = serve(limits=Limits(max_waiting=1))
    client = client_for(server)
    running = client.chat.completions.create(stream=True, **LONG)
    next(iter(running))  # its generation holds the engine
    answered, refused = [], []

    def ask():
        try:
            answered.append(client.chat.completions.create(**{**LONG, "max_tokens": 2}))
        except openai.RateLimitError as busy:
            refused.append(busy)

    threads = [threading.Thread(target=ask) for _ in range(2)]  # one place in line for the two
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not refused and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(refused) == 1 and not answered  # refused at once; the other waits behind the running answer
    assert refused[0].code == "rate_limit_exceeded"
    assert int(refused[0].response.headers["retry-after"]) >= 1
    running.close()  # the waiting request gets its turn
    for thread in threads:
        thread.join(30)
    assert len(answered) == 1 and answered[0].usage.completion_tokens >= 1


def test_the_app_chat_and_the_server_take_turns_without_mixing_conversations(serve, engine, tiny_fp32):
    greedy = SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=6)

    def answers(conversation):
        out = []
        for question in ("Hello there.", "What did I just say?"):
            events = list(conversation.ask(question, sampling=greedy))
            out.append(events[-1].token_ids)
        return out

    expected = answers(Engine(tiny_fp32).new_conversation())
    server = serve()
    client = client_for(server)
    conversation = engine.new_conversation()
    events = list(conversation.ask("Hello there.", sampling=greedy))
    client.chat.completions.create(
        model="iris", messages=[{"role": "user", "content": "Something else."}], temperature=0, max_tokens=20
    )
    events += list(conversation.ask("What did I just say?", sampling=greedy))
    got = [e.token_ids for e in events if isinstance(e, TurnStats)]
    assert got == expected

    # While the server holds the engine, the app's question waits (and says so), then answers.
    assert engine.turn_taking.hold(lambda: False)
    try:
        waiting = conversation.regenerate(sampling=greedy)
        assert next(waiting) == StatusEvent(Stage.WAITING)
    finally:
        engine.turn_taking.release()
    rest = list(waiting)
    assert rest[-1].token_ids == expected[1]
    assert any(isinstance(e, TextEvent) for e in rest) or not expected[1]


# -- command line ------------------------------------------------------------------------------


def test_command_line_serves_until_stopped_and_refuses_unsafe_binds(tiny_fp32):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    refused = subprocess.run(
        [sys.executable, "-m", "engine.serve", str(tiny_fp32), "--host", "0.0.0.0"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "--api-key" in refused.stderr
    assert "Traceback" not in refused.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.serve", str(tiny_fp32), "--port", "0", "--api-key", "k"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Serving fp32 at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        client = openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=60)
        answer = client.chat.completions.create(
            model="fp32", messages=[{"role": "user", "content": "Hi"}], temperature=0, max_tokens=3
        )
        assert answer.usage.completion_tokens >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()
