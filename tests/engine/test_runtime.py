"""The decoder's optional prompt graph: a damaged one is said out loud, and prompts still read."""

from __future__ import annotations

import logging

import numpy as np

from engine.manifest import Manifest
from engine.runtime import DecoderRunner


def test_a_prompt_graph_that_cannot_load_is_reported_and_the_decoder_reads_prompts(tiny_fp32, tmp_path, caplog):
    damaged = tmp_path / "prompt.onnx"
    damaged.write_bytes(b"not a graph")
    section = Manifest.load(tiny_fp32).decoder
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        decoder = DecoderRunner(tiny_fp32 / section.file, section, 256, prefill_path=damaged)
        assert not decoder.wait_for_prefill_graph(60)
    assert "prompt.onnx cannot be used" in caplog.text
    assert decoder.graph_for(200) == "decoder"
    ids = np.arange(40, 80)
    positions = np.repeat(np.arange(40)[None, :], 3, axis=0)
    assert np.isfinite(decoder.prefill(ids, positions)).all() and decoder.length == 40  # 40 tokens: a prompt chunk
