"""Chat messages -> token ids, the same ids transformers' apply_chat_template + Qwen3VLProcessor give.

The checkpoint's own jinja chat template is rendered with the Environment transformers uses
(chat_template_utils), tokenized with the `tokenizers` library from tokenizer.json, and every
image slot (the manifest's image token) is expanded to its image's token count.
`PromptBuilder.encode_turn` also renders only the *continuation* of a conversation, so the
engine can keep the KV cache of earlier turns and prefill just the new tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from engine.errors import ArtifactError, EngineError
from engine.manifest import TokenIds
from engine.tokens import ImageGrid, ImageRun, Tokens

# {"role": "user", "content": str | [{"type": "image"}, {"type": "text", "text": ...}]}
Message = dict[str, Any]

# Private-use characters transformers wraps around control tokens typed by the user
# (`sanitize_control_tokens=True`), so they are encoded as plain text.
_MARK_START = "\U000f0000"
_MARK_END = "\U000f0001"
# Stands for a question not typed yet, to find where the template puts its text.
_QUESTION_SLOT = "\U000f0002question\U000f0002"


# ---------------------------------------------------------------------------------------------
# Template


class _GenerationBlock(jinja2.ext.Extension):
    """transformers' `{% generation %}` tag; it only tracks assistant spans, so render the body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers replaces jinja's tojson, which would HTML-escape.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def user_message(text: str, image_count: int = 0) -> Message:
    """A user turn in the processor format: the images first, then the text."""
    content: list[dict] = [{"type": "image"} for _ in range(image_count)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_message(text: str) -> Message:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


# ---------------------------------------------------------------------------------------------
# Builder


class PromptBuilder:
    """Renders and tokenizes conversations for one checkpoint (its template and tokenizer).

    With `sanitize_control_tokens` (the default; transformers' option of the same name), control
    tokens that appear in message text, e.g. a user typing "<|im_end|>", are encoded as plain
    text, so only the template can open and close turns or place image slots.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_template: str,
        tokens: TokenIds,
        *,
        sanitize_control_tokens: bool = True,
    ):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.sanitize_control_tokens = sanitize_control_tokens
        self.image_token_id = tokens.image
        self.end_of_turn_id = tokens.im_end
        self._require_token(tokens.image)
        self.end_of_turn = self._require_token(tokens.im_end)  # the text the template writes for it
        try:
            self._env = _environment()
            self._template = self._env.from_string(chat_template)
        except jinja2.exceptions.TemplateError as exc:
            raise ArtifactError(f"The model's chat template is invalid: {exc}") from exc

    def _require_token(self, token_id: int) -> str:
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise ArtifactError(
                f"The tokenizer has no token {token_id}, which the model's manifest names. Convert the model again."
            )
        return token

    # --- text ------------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, **kwargs) -> str:
        """The template's text for `messages` (user strings marked when sanitizing)."""
        if self.sanitize_control_tokens:
            messages = _mark(list(messages), self._control_token_re)
        try:
            return self._template.render(
                messages=list(messages),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **kwargs,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise EngineError(f"The chat template rejected the conversation: {exc}") from exc

    def continuation_text(self, history: Sequence[Message], new_messages: Sequence[Message]) -> str:
        """Text after the history's last end-of-turn token, up to the new generation prompt."""
        full = self.render([*history, *new_messages], add_generation_prompt=True)
        if not history:
            return full
        before = self.render(history, add_generation_prompt=False)
        cut = before.rfind(self.end_of_turn)
        if cut < 0:
            raise EngineError(f"The conversation so far has no {self.end_of_turn} to continue from.")
        cut += len(self.end_of_turn)
        if not full.startswith(before[:cut]):
            raise EngineError("The chat template renders earlier turns differently once a turn is added.")
        return full[cut:]

    # --- tokens ----------------------------------------------------------------------------

    def encode_conversation(
        self,
        messages: Sequence[Message],
        image_grids: Sequence[ImageGrid] = (),
        add_generation_prompt: bool = True,
    ) -> Tokens:
        """All tokens of a conversation; `image_grids[k]` is the k-th image's grid."""
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        return self._expand_image_pads(self._encode_rendered(text), image_grids)

    def encode_turn(
        self,
        history: Sequence[Message],
        message: Message | Sequence[Message],
        image_grids: Sequence[ImageGrid] = (),
    ) -> Tokens:
        """Tokens to prefill for a new message (or messages, e.g. system + user) after `history`.

        With no history this is the whole prompt. Otherwise the cache must already hold the
        history up to and including the last answer's `<|im_end|>` (if an answer stopped early,
        the engine feeds `end_of_turn_id` itself), and only the rest is returned:
        "\\n<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n". `image_grids` are
        the grids of the new images only.
        """
        new_messages = [message] if isinstance(message, dict) else list(message)
        text = self.continuation_text(history, new_messages)
        return self._expand_image_pads(self._encode_rendered(text), image_grids)

    def encode_turn_prefix(
        self,
        history: Sequence[Message],
        image_grids: Sequence[ImageGrid],
    ) -> Tokens | None:
        """The start of encode_turn() for a user message whose images come before its text: what
        the template writes up to where the text begins, so the images can be read before the
        question is typed. Rendered from the template itself; None if it would not show where
        the text goes. The caller must still check that the whole turn starts with these ids
        (a tokenizer may merge across the cut), and read at send time where it does not."""
        message = user_message(_QUESTION_SLOT, len(image_grids))
        text = self.continuation_text(history, [message])
        cut = text.find(_QUESTION_SLOT)
        if cut < 0 or text.find(_QUESTION_SLOT, cut + 1) >= 0:
            return None
        ids = self._encode_rendered(text[:cut])
        if ids.count(self.image_token_id) != len(image_grids):  # the template puts images after the text
            return None
        return self._expand_image_pads(ids, image_grids)

    def encode(self, text: str) -> list[int]:
        """Plain tokenization, control tokens in `text` recognised, nothing added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _expand_image_pads(self, ids: list[int], image_grids: Sequence[ImageGrid]) -> Tokens:
        """Each image slot becomes its image's run of tokens; where each run lies, and its grid, is kept."""
        slots = ids.count(self.image_token_id)
        if slots != len(image_grids):
            raise EngineError(f"The prompt has {slots} image slot(s) but {len(image_grids)} image(s) were given.")
        grids = iter(image_grids)
        out: list[int] = []
        runs: list[ImageRun] = []
        for token_id in ids:
            if token_id == self.image_token_id:
                run = ImageRun(len(out), next(grids))
                runs.append(run)
                out.extend([token_id] * run.count)
            else:
                out.append(token_id)
        return Tokens(tuple(out), tuple(runs))

    def _encode_rendered(self, text: str) -> list[int]:
        """Tokenize rendered text; marked control tokens become plain text (transformers'
        encode_marked_chat, including its newline trick for pieces after the first)."""
        pieces = self._marker_split_re.split(text)
        ids = self.encode(pieces[0])
        for i, piece in enumerate(pieces[1:], start=1):
            if not piece:  # empty text, or a lone marker (None)
                continue
            as_text = i % 2 == 1
            piece_ids = self._encode_piece(piece, as_text)
            if as_text and self.tokenizer.token_to_id(piece) in piece_ids:
                raise EngineError(f"Cannot encode {piece!r} as plain text with this tokenizer.")
            ids += piece_ids
        return ids

    def _encode_piece(self, piece: str, as_text: bool) -> list[int]:
        encode = self._encode_plain if as_text else self.encode
        newline = self._newline_ids
        piece_ids = encode("\n" + piece)
        if piece_ids[: len(newline)] == newline:
            return piece_ids[len(newline) :]
        return encode(piece)

    def _encode_plain(self, text: str) -> list[int]:
        """Tokenize ignoring added tokens: normalizer, pre-tokenizer and BPE model only."""
        tok = self.tokenizer
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        splits = [text]
        if tok.pre_tokenizer is not None:
            splits = [split for split, _ in tok.pre_tokenizer.pre_tokenize_str(text)]
        return [token.id for split in splits for token in tok.model.tokenize(split)]

    @cached_property
    def _newline_ids(self) -> list[int]:
        return self.encode("\n")

    @cached_property
    def _control_token_re(self) -> re.Pattern:
        """Special tokens plus added tokens the template itself writes (transformers' rule)."""
        literal_text = self._template_literal_text()
        tokens = [
            t.content
            for t in self.tokenizer.get_added_tokens_decoder().values()
            if t.special or (t.content in literal_text and not t.content.isspace())
        ]
        return _alternation(tokens)

    @cached_property
    def _marker_split_re(self) -> re.Pattern:
        added = [t.content for t in self.tokenizer.get_added_tokens_decoder().values()]
        inner = _alternation(added).pattern
        return re.compile(f"{_MARK_START}({inner}){_MARK_END}|[{_MARK_START}{_MARK_END}]")

    def _template_literal_text(self) -> str:
        ast = self._env.parse(self.chat_template)
        literals = {node.data for node in ast.find_all(jinja2.nodes.TemplateData)}
        literals |= {node.value for node in ast.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
        return "\0".join(literals)


def _alternation(tokens: Sequence[str]) -> re.Pattern:
    longest_first = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first)) or "(?!)")


def _mark(value: Any, control_re: re.Pattern) -> Any:
    """Copy of `value` with control tokens in its strings wrapped in markers (dict keys untouched)."""
    if isinstance(value, str):
        value = value.replace(_MARK_START, "").replace(_MARK_END, "")
        return control_re.sub(f"{_MARK_START}\\g<0>{_MARK_END}", value)
    if isinstance(value, dict):
        return {key: _mark(item, control_re) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(item, control_re) for item in value]
    return value
