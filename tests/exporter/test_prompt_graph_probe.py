"""The measurement that decides whether the int8 prompt graph is offered: real kernels, cached per CPU."""

from __future__ import annotations

import json

import onnxruntime as ort

from engine.cpu import cpu_info
from exporter.probes import prompt_graph
from exporter.probes.prompt_graph import PromptGraphAdvice, measure_prompt_kernels, prompt_graph_advice


def test_both_kernels_are_timed_on_this_cpu():
    advice = measure_prompt_kernels(seconds=0.3)
    assert advice.int4_gops > 1 and advice.int8_gops > 1
    assert advice.cpu_summary == cpu_info().summary()
    assert f"{advice.prompt_speedup:.1f}x faster" in advice.hint()  # the prediction this CPU measured


def test_the_gain_predicted_for_prompts_is_amdahls_and_decides_the_offer():
    same = PromptGraphAdvice("cpu", 100.0, 100.0)
    assert abs(same.prompt_speedup - 1.0) < 1e-9 and not same.offered and not same.suggested
    amx = PromptGraphAdvice("cpu", 400.0, 3000.0)  # the AMX Xeon's kernels: prompts read ~2.5x faster
    assert 2.3 < amx.prompt_speedup < 2.7 and amx.offered and amx.suggested
    assert PromptGraphAdvice("cpu", 100.0, 50.0).prompt_speedup < 1


def test_the_measurement_is_cached_per_processor_and_onnxruntime(tmp_path, monkeypatch):
    cache = tmp_path / "advice.json"
    calls = []

    def fake_measure(seconds, cpu):
        calls.append(seconds)
        return PromptGraphAdvice(cpu.summary(), 100.0, 300.0)

    monkeypatch.setattr(prompt_graph, "measure_prompt_kernels", fake_measure)
    first = prompt_graph_advice(cache)
    assert prompt_graph_advice(cache) == first and len(calls) == 2
    stored = json.loads(cache.read_text())
    stored["key"] = stored["key"].replace(ort.__version__, "0.0.0")  # another onnxruntime
    cache.write_text(json.dumps(stored))
    prompt_graph_advice(cache)
    assert len(calls) == 4
    cache.write_text("{not json")
    prompt_graph_advice(cache)
    assert len(calls) == 6
