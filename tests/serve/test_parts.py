"""The server's parts on their own: request validation, prefix choice, stop sequences, host rules."""

from __future__ import annotations

import base64
import json

import pytest

from engine.serve.errors import ApiError
from engine.serve.guard import HostPolicy, check_exposure, host_name
from engine.serve.limits import Limits
from engine.serve.prefix import Slot, SlotPool, reusable
from engine.serve.prompt import Prompt
from engine.serve.schema import ImagePart, parse_chat_request
from engine.serve.stops import StopText
from engine.tokens import ImageGrid, ImageRun, Tokens


def parse(**fields):
    body = {"model": "iris", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat_request(json.dumps(body).encode())


def refused(**fields) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(**fields)
    assert caught.value.status == 400
    return caught.value


# -- requests ----------------------------------------------------------------------------------


def test_a_full_request_is_read_into_its_fields():
    png = base64.b64encode(b"\x89PNG fake").decode()
    request = parse(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is it?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}", "detail": "high"}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
            {"role": "user", "content": "Sure?"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
        top_p=0.5,
        seed=3,
        max_completion_tokens=7,
        max_tokens=99,
        stop="END",
        presence_penalty=1,
        frequency_penalty=-0.5,
    )
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.images == [ImagePart(b"\x89PNG fake", "high", "messages[1].content[1]")]
    assert (request.stream, request.include_usage, request.temperature, request.top_p, request.seed) == (
        True,
        True,
        0.0,
        0.5,
        3,
    )
    assert request.max_tokens == 7 and request.stop == ("END",)  # max_completion_tokens wins
    assert (request.presence_penalty, request.frequency_penalty) == (1.0, -0.5)


@pytest.mark.parametrize(
    "fields, code, param",
    [
        ({"temperature": 3}, "invalid_value", "temperature"),
        ({"temperature": "hot"}, "invalid_type", "temperature"),
        ({"max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"seed": -1}, "invalid_value", "seed"),
        ({"n": 2}, "unsupported_value", "n"),
        ({"tools": [{"type": "function"}]}, "unsupported_parameter", "tools"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_value", "stop"),
        ({"messages": []}, "invalid_value", "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "invalid_value", "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "invalid_value",
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                    }
                ]
            },
            "invalid_value",
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "unsupported_value",
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,AAAA"}}],
                    }
                ]
            },
            "invalid_image_url",
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
                    }
                ]
            },
            "invalid_image_url",
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/home/me/photo.png"}}]}
                ]
            },
            "image_url_not_supported",
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_bad_fields_are_named_in_the_error(fields, code, param):
    error = refused(**fields)
    assert (error.code, error.param) == (code, param)
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_request_limits():
    many = [{"role": "user", "content": "x"}] * 3
    with pytest.raises(ApiError, match="At most 2 messages"):
        parse_chat_request(json.dumps({"model": "m", "messages": many}).encode(), Limits(max_messages=2))
    big = base64.b64encode(b"x" * 4000).decode()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{big}"}}]}
    with pytest.raises(ApiError, match="larger than") as caught:
        parse_chat_request(json.dumps({"model": "m", "messages": [message]}).encode(), Limits(max_image_bytes=3000))
    assert caught.value.code == "image_too_large"
    with pytest.raises(ApiError, match="At most 1 images"):
        parse_chat_request(json.dumps({"model": "m", "messages": [message, message]}).encode(), Limits(max_images=1))


# -- prefix reuse ------------------------------------------------------------------------------


def prompt_with_image(before: list[int], image: str, count: int, after: list[int]) -> Prompt:
    keys = before + [image] * count + after
    run = ImageRun(len(before), ImageGrid((1, 2, 2 * count), 2))
    return Prompt(Tokens((0,) * len(keys), (run,)), keys, [None])


def test_reuse_never_ends_inside_an_image_and_leaves_the_last_token_to_read():
    prompt = prompt_with_image([1, 2], "img-a", 4, [3, 4])
    assert reusable([1, 2, "img-a", "img-a"], prompt) == 2  # cut back to the image's start
    assert reusable([1, 2, "img-a", "img-a", "img-a", "img-a", 3], prompt) == 7
    assert reusable(prompt.keys + [9, 9], prompt) == len(prompt.keys) - 1  # the very same prompt again
    assert reusable([1, 2, "img-b", "img-b", "img-b", "img-b", 3, 4], prompt) == 2
    assert reusable([], prompt) == 0


class FakeCache:
    def __init__(self):
        self.length = 0

    def reset(self, length=0):
        assert 0 <= length <= self.length
        self.length = length


def filled(pool: SlotPool, index: int, keys: list, prompt_length: int) -> Slot:
    slot = pool.slots[index]
    slot.cache = slot.cache or FakeCache()
    slot.keys, slot.cache.length, slot.prompt_length = list(keys), len(keys), prompt_length
    return slot


def plain(keys: list) -> Prompt:
    return Prompt(Tokens((0,) * len(keys)), keys, [])


def test_slots_keep_separate_conversations_and_follow_ups_find_theirs():
    made = []
    pool = SlotPool(lambda: made.append(FakeCache()) or made[-1], 2)
    assert made == []  # a slot's cache is made when it is first used
    a = filled(pool, 0, [1, 2, 3, 4, 5, 6, 7, 8], prompt_length=6)  # system 1 2, question, answer 7 8
    slot, keep = pool.choose(plain([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))  # a follow-up
    assert (slot, keep) == (a, 8)
    slot, keep = pool.choose(plain([1, 2, 30, 31]))  # another conversation, same system prompt
    assert slot is pool.slots[1] and keep == 0  # the first conversation is not overwritten
    assert slot.cache is made[-1]
    filled(pool, 1, [1, 2, 30, 31, 40], prompt_length=4)
    slot, keep = pool.choose(plain([1, 2, 3, 4, 5, 6]))  # the first question again (regenerate)
    assert (slot, keep) == (a, 5)


# -- stop sequences ----------------------------------------------------------------------------


def run_stops(stops, pieces):
    stop, out = StopText(stops), []
    for piece in pieces:
        text, done = stop.push(piece)
        out.append(text)
        if done:
            return "".join(out), True
    return "".join(out) + stop.flush(), False


def test_stop_sequences_across_pieces_are_cut_and_never_half_sent():
    stop = StopText(["END"])
    assert stop.push("Hello E") == ("Hello ", False)  # "E" may begin END: held back
    assert stop.push("N") == ("", False)
    assert stop.push("Dless") == ("", True)
    assert run_stops(["END"], ["Hello E", "xtra"]) == ("Hello Extra", False)
    assert run_stops(["\n\n", "stop"], ["a\n", "\nb"]) == ("a", True)
    assert run_stops(["xyz"], ["ab", "xy"]) == ("abxy", False)  # held text comes out at the end
    assert run_stops([], ["a", "b"]) == ("ab", False)


# -- who may connect ---------------------------------------------------------------------------


def test_host_header_rules():
    local = HostPolicy.for_bind("127.0.0.1")
    assert all(local.allows(host_name(h)) for h in ("127.0.0.1:8088", "localhost:8088", "LOCALHOST", "[::1]:8088"))
    assert not any(local.allows(host_name(h)) for h in ("evil.example:8088", "192.168.1.5", "", "localhost.evil"))
    lan = HostPolicy.for_bind("192.168.1.5", ["iris.lan"])
    assert lan.allows("192.168.1.5") and lan.allows("iris.lan")
    assert not lan.allows("localhost") and not lan.allows("10.0.0.1") and not lan.allows("evil.example")
    everywhere = HostPolicy.for_bind("0.0.0.0")
    assert everywhere.allows("10.0.0.1") and everywhere.allows("localhost") and not everywhere.allows("evil.example")


def test_listening_beyond_this_computer_needs_a_key():
    check_exposure("127.0.0.1", None)
    check_exposure("localhost", None)
    check_exposure("::1", None)
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(ValueError, match="API key"):
            check_exposure(host, None)
        check_exposure(host, "key")
