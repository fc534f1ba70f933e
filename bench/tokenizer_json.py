"""tokenizer.json for Qwen2-family checkpoints, rebuilt from vocab.json + merges.txt +
tokenizer_config.json with the `tokenizers` library alone.

The real checkpoint ships a tokenizer.json, but our copy of its side files does not (it is too
large for the source snapshot). The random full-size checkpoint must look like a real download,
and the app loads tokenizer.json with `tokenizers`, so we rebuild it here without transformers.
The pipeline is Qwen2's: NFC, a regex split, byte-level BPE, byte-level decoding, plus the
added tokens with the exact ids tokenizer_config.json gives them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# The pre-tokenization regex of Qwen2's tokenizer (GPT-4-like, but single digits).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TokenizerBuildError(ValueError):
    """The side files do not describe a tokenizer we can rebuild faithfully."""


def _added_tokens(tokenizer_config: dict) -> list[tuple[int, AddedToken]]:
    """(id, token) pairs from `added_tokens_decoder`, sorted by id."""
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    out = []
    for key, info in decoder.items():
        token = AddedToken(
            info["content"],
            single_word=bool(info.get("single_word", False)),
            lstrip=bool(info.get("lstrip", False)),
            rstrip=bool(info.get("rstrip", False)),
            normalized=bool(info.get("normalized", False)),
            special=bool(info.get("special", False)),
        )
        out.append((int(key), token))
    return sorted(out, key=lambda pair: pair[0])


def build_qwen2_tokenizer(folder: Path) -> Tokenizer:
    """The byte-level BPE tokenizer described by the three side files in `folder`."""
    folder = Path(folder)
    paths = {name: folder / name for name in ("vocab.json", "merges.txt", "tokenizer_config.json")}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        raise TokenizerBuildError(f"{folder} lacks {', '.join(missing)}; cannot rebuild tokenizer.json")
    config = json.loads(paths["tokenizer_config.json"].read_text(encoding="utf-8"))

    bpe = models.BPE.from_file(
        str(paths["vocab.json"]),
        str(paths["merges.txt"]),
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()

    for token_id, token in _added_tokens(config):
        # Ids are assigned in order after the BPE vocab, so adding in id order reproduces them.
        if token.special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        got = tok.token_to_id(token.content)
        if got != token_id:
            raise TokenizerBuildError(
                f"added token {token.content!r} got id {got}, tokenizer_config.json says {token_id}; "
                "the added ids do not follow the vocab contiguously"
            )
    return tok


def write_tokenizer_json(folder: Path, out_path: Path | None = None) -> Path:
    """Build from the side files in `folder` and save tokenizer.json (next to them by default)."""
    out_path = Path(out_path) if out_path is not None else Path(folder) / "tokenizer.json"
    build_qwen2_tokenizer(folder).save(str(out_path))
    return out_path
