"""engine.text_stream with the real Qwen tokenizer: whole characters only, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest

from engine.text_stream import TextStream

REPLACEMENT = "\ufffd"


def gpt2_byte_alphabet() -> dict[int, str]:
    """The published GPT-2 byte -> printable character table that byte-level BPE uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


@pytest.fixture(scope="module")
def byte_ids(fast_tokenizer) -> list[int]:
    """Token id of each single byte 0..255."""
    ids = [fast_tokenizer.token_to_id(ch) for ch in gpt2_byte_alphabet().values()]
    assert None not in ids
    return ids


def stream_all(tokenizer, ids) -> tuple[list[str], str]:
    stream = TextStream(tokenizer)
    return [stream.push(i) for i in ids], stream.flush()


MIXED = "mixed 中文 and emoji 🎉🎉 done, ça va?"


@pytest.mark.parametrize("text", ["你好世界", "👍🏽 ok", MIXED])
def test_real_strings_stream_as_whole_characters(fast_tokenizer, text):
    ids = fast_tokenizer.encode(text, add_special_tokens=False).ids
    pieces, rest = stream_all(fast_tokenizer, ids)
    assert all(REPLACEMENT not in p for p in pieces)
    assert "".join(pieces) + rest == text
    assert rest == ""


def test_split_emoji_is_held_back(fast_tokenizer):
    """The real tokenizer splits ' 🎉' over three tokens that decode to U+FFFD on their own."""
    ids = fast_tokenizer.encode(" emoji 🎉", add_special_tokens=False).ids
    assert any(fast_tokenizer.decode([i]).endswith(REPLACEMENT) for i in ids)  # the test has teeth
    pieces, _ = stream_all(fast_tokenizer, ids)
    assert "" in pieces
    assert pieces[-1] == " 🎉"


def test_byte_by_byte_characters(fast_tokenizer, byte_ids):
    text = "你好👍🏽 é"
    ids = [byte_ids[b] for b in text.encode("utf-8")]
    pieces, rest = stream_all(fast_tokenizer, ids)
    non_empty = [p for p in pieces if p]
    assert non_empty == ["你", "好", "👍", "🏽", " ", "é"]
    assert rest == ""


def test_pieces_add_up_to_the_full_decode(fast_tokenizer, byte_ids):
    """Random mixes of whole tokens, loose bytes (often invalid UTF-8) and special tokens."""
    rng = np.random.default_rng(0)
    specials = [151643, 151644, 151645, 151655]
    for _ in range(200):
        ids = []
        for kind in rng.integers(0, 3, 25):
            if kind == 0:
                ids.append(int(rng.integers(0, 151643)))
            elif kind == 1:
                ids.append(byte_ids[int(rng.integers(128, 256))])
            else:
                ids.append(int(rng.choice(specials)))
        pieces, rest = stream_all(fast_tokenizer, ids)
        assert "".join(pieces) + rest == fast_tokenizer.decode(ids, skip_special_tokens=True)


def test_incomplete_tail_comes_out_on_flush(fast_tokenizer, byte_ids):
    stream = TextStream(fast_tokenizer)
    assert stream.push(fast_tokenizer.token_to_id("ok")) == "ok"
    first_byte = "👍".encode()[0]
    assert stream.push(byte_ids[first_byte]) == ""
    assert stream.flush() == REPLACEMENT  # same as a full decode of the dangling byte
    assert stream.push(fast_tokenizer.token_to_id("ok")) == "ok"  # ready for a new answer


def test_special_tokens_are_skipped_unless_asked(fast_tokenizer):
    im_end = fast_tokenizer.token_to_id("<|im_end|>")
    assert TextStream(fast_tokenizer).push(im_end) == ""
    assert TextStream(fast_tokenizer, skip_special_tokens=False).push(im_end) == "<|im_end|>"
