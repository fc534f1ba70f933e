"""Streamed token ids -> text pieces made of whole characters.

Byte-level BPE can split one character (a CJK ideograph, an emoji) over several tokens; decoding
each token alone would show replacement characters. `tokenizers`' DecodeStream holds such bytes
back until the character is complete; this adds `flush()` for whatever is still held when the
answer ends, so the pieces always add up to the full decode.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class TextStream:
    """Incremental detokenizer for one answer; call `push` per token, `flush` at the end."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self._held: list[int] = []  # ids whose text has not been returned yet

    def push(self, token_id: int) -> str:
        """Text completed by this token; "" while a character is still incomplete."""
        piece = self._stream.step(self._tokenizer, int(token_id))
        if piece is None:
            self._held.append(int(token_id))
            return ""
        self._held.clear()
        return piece

    def flush(self) -> str:
        """The text of held-back tokens (invalid UTF-8 comes out as U+FFFD, as in a full
        decode), then start over for a new answer."""
        rest = self._tokenizer.decode(self._held, skip_special_tokens=self._skip_special_tokens)
        self._held.clear()
        self._stream = DecodeStream(skip_special_tokens=self._skip_special_tokens)
        return rest
