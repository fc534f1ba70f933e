"""The loaded graphs and tokenizer agree with the manifest that describes them.

Checked once at load, so a folder whose parts do not fit together (edited, or assembled from two
conversions) stops with a clear message instead of giving wrong answers later.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from .errors import ArtifactError
from .manifest import Manifest
from .runtime import DecoderRunner, VisionRunner

KV_DTYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}


def check_loaded(manifest: Manifest, tokenizer: Tokenizer, vision: VisionRunner, decoder: DecoderRunner) -> None:
    """ArtifactError naming the first part that disagrees with the manifest."""
    for problem in (
        _vocabulary_problem(manifest, tokenizer, decoder),
        _cache_problem(manifest, decoder),
        _patch_problem(manifest, vision),
    ):
        if problem:
            raise ArtifactError(f"The model folder is inconsistent: {problem}. Convert the model again.")


def _vocabulary_problem(manifest: Manifest, tokenizer: Tokenizer, decoder: DecoderRunner) -> str | None:
    vocab = manifest.decoder.vocab_size
    logits = {o.name: o.shape for o in decoder.session.get_outputs()}.get("logits")
    if not logits or logits[-1] != vocab:
        return f"the decoder's logits are {logits}, the manifest says {vocab} tokens"
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab:
        return f"the tokenizer has more tokens than the decoder's {vocab}"
    if any(not 0 <= token < vocab for token in manifest.tokens.eos):
        return f"an end-of-answer token of {manifest.tokens.eos} is outside the decoder's {vocab}"
    return None


def _cache_problem(manifest: Manifest, decoder: DecoderRunner) -> str | None:
    declared = KV_DTYPES.get(manifest.decoder.kv_dtype)
    if declared != decoder.kv_type:
        return f"the decoder keeps its cache as {decoder.kv_type}, the manifest says {manifest.decoder.kv_dtype}"
    return None


def _patch_problem(manifest: Manifest, vision: VisionRunner) -> str | None:
    expected = manifest.vision.input_patch_dim
    if vision.input_width != expected:
        return f"the vision graph takes {vision.input_width} values per patch, the manifest says {expected}"
    return None
