"""engine.sampling against transformers' logits processors (built by generate's own factory)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import EngineError
from engine.sampling import Sampler, SamplingOptions, apply_penalties, filter_logits

VOCAB = 5000


def random_logits(seed: int, vocab: int = VOCAB) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(vocab) * 3).astype(np.float32)


def transformers_chain(model, **settings):
    """The processor list transformers' generate() builds for these settings, in its order."""
    from transformers import GenerationConfig

    config = GenerationConfig(**settings)
    return model._get_logits_processor(generation_config=config, input_ids_seq_length=1)


def run_chain(chain, logits, seen_ids):
    import torch

    scores = chain(torch.tensor([list(seen_ids)]), torch.from_numpy(logits.copy())[None])
    return scores[0].numpy()


def test_defaults_are_the_checkpoints_generation_config(data_dir):
    config = json.loads((data_dir / "generation_config.json").read_text())
    from_file = SamplingOptions.from_generation_config(config)
    assert from_file == SamplingOptions()
    assert (from_file.temperature, from_file.top_p, from_file.top_k) == (0.7, 0.8, 20)
    assert from_file.repetition_penalty == 1.0 and not from_file.greedy
    assert from_file.presence_penalty == 1.5  # the model card's advice for VL use
    assert SamplingOptions.from_generation_config({"do_sample": False}).greedy
    assert SamplingOptions.from_generation_config(config, top_k=40).top_k == 40


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.0),
        dict(temperature=1.3, top_p=0.95, top_k=0, repetition_penalty=1.2),
        dict(temperature=0.5, top_p=1.0, top_k=50, repetition_penalty=0.8),
        dict(temperature=1.0, top_p=0.3, top_k=1000, repetition_penalty=1.05),
    ],
)
def test_processing_matches_the_transformers_chain(reference_model, settings):
    chain = transformers_chain(reference_model, do_sample=True, **settings)
    sampler = Sampler(SamplingOptions(presence_penalty=0.0, **settings))
    for seed in range(5):
        logits = random_logits(seed)
        seen = np.random.default_rng(100 + seed).integers(0, VOCAB, 40).tolist()
        seen += seen[:10]  # repeats count once
        expected = run_chain(chain, logits, seen)
        ours = sampler.process(logits, seen)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(expected))
        kept = np.isfinite(expected)
        np.testing.assert_allclose(ours[kept], expected[kept], rtol=1e-6, atol=1e-6)
        assert kept.sum() < VOCAB or settings["top_p"] == 1.0 and settings["top_k"] == 0


def test_repetition_penalty_equals_transformers_processor():
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = random_logits(7)
    seen = [3, 3, 10, 4999, 17, 250]
    processor = RepetitionPenaltyLogitsProcessor(1.7)
    expected = processor(torch.tensor([seen]), torch.from_numpy(logits)[None])
    ours = apply_penalties(logits, seen, repetition_penalty=1.7, presence_penalty=0.0)
    np.testing.assert_array_equal(ours, expected[0].numpy())


def test_top_k_keeps_ties_like_transformers():
    import torch
    from transformers import TopKLogitsWarper

    logits = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 0.5], dtype=np.float32)
    expected = TopKLogitsWarper(3)(None, torch.from_numpy(logits)[None])[0].numpy()
    ours = filter_logits(logits, temperature=1.0, top_k=3, top_p=1.0)
    np.testing.assert_array_equal(ours, expected)
    assert np.isfinite(ours).sum() == 4  # 3.0, 3.0 and both 2.0s


def test_presence_penalty_subtracts_once_per_distinct_token():
    logits = random_logits(8)
    seen = [5, 5, 5, 9, 12, VOCAB + 3, -1]  # out-of-vocabulary ids are ignored
    ours = apply_penalties(logits, seen, repetition_penalty=1.0, presence_penalty=1.5)
    expected = logits.copy()
    expected[[5, 9, 12]] -= 1.5
    np.testing.assert_array_equal(ours, expected)
    assert logits[5] == random_logits(8)[5]  # input untouched


def test_frequency_penalty_subtracts_per_occurrence_as_openai_does():
    logits = random_logits(9)
    seen = [5, 5, 5, 9, VOCAB + 3]
    ours = apply_penalties(logits, seen, repetition_penalty=1.0, presence_penalty=0.5, frequency_penalty=0.25)
    expected = logits.copy()
    expected[5] -= 0.5 + 3 * 0.25  # OpenAI: mu[j] - c[j] * frequency - (c[j] > 0) * presence
    expected[9] -= 0.5 + 0.25
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert (
        Sampler(SamplingOptions(greedy=True, presence_penalty=0.0, frequency_penalty=1.0)).next_token(
            np.array([3.0, 2.5, 0.0], np.float32), seen_ids=[0]
        )
        == 1
    )


def test_greedy_is_argmax_after_penalties():
    logits = np.zeros(10, dtype=np.float32)
    logits[4], logits[7] = 5.0, 4.0
    greedy = Sampler(SamplingOptions(greedy=True, presence_penalty=1.5))
    assert greedy.next_token(logits) == 4
    assert greedy.next_token(logits, seen_ids=[4]) == 7  # 5.0 - 1.5 < 4.0
    assert Sampler(SamplingOptions(greedy=True, temperature=0.0)).options.greedy


def _many(sampler, logits, n=20):
    return [sampler.next_token(logits) for _ in range(n)]


def test_seeded_draws_repeat_and_differ_between_seeds():
    logits = random_logits(9)

    def draws(seed):
        options = SamplingOptions(seed=seed, temperature=1.0, top_p=1.0, top_k=0, presence_penalty=0.0)
        return _many(Sampler(options), logits)

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_draws_follow_the_filtered_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    options = SamplingOptions(temperature=1.0, top_k=3, top_p=1.0, presence_penalty=0.0, seed=0)
    sampler = Sampler(options)
    picks = np.bincount(_many(sampler, logits, 6000), minlength=4)
    assert picks[3] == 0  # cut by top-k
    freq = picks[:3] / picks.sum()
    np.testing.assert_allclose(freq, np.array([0.5, 0.3, 0.15]) / 0.95, atol=0.02)


def test_bad_options_and_bad_logits():
    with pytest.raises(ValueError, match="temperature"):
        SamplingOptions(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingOptions(top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        SamplingOptions(top_k=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingOptions(max_new_tokens=0)


def _broken_rows():
    nan_row = np.full(VOCAB, np.nan, dtype=np.float32)
    inf_row = np.full(VOCAB, np.inf, dtype=np.float32)
    some_nan = random_logits(3)
    some_nan[::7] = np.nan  # a few NaNs among finite scores: argmax would still pick index 0
    some_inf = random_logits(4)
    some_inf[[10, 20]] = np.inf
    all_masked = np.full(VOCAB, -np.inf, dtype=np.float32)
    return {"nan": nan_row, "inf": inf_row, "some nan": some_nan, "some +inf": some_inf, "all -inf": all_masked}


@pytest.mark.parametrize("row", list(_broken_rows()))
@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(greedy=True, presence_penalty=0.0),
        SamplingOptions(greedy=True, presence_penalty=1.5, repetition_penalty=1.1),
        SamplingOptions(seed=0),  # the card's defaults: top-k 20, top-p 0.8
        SamplingOptions(seed=0, top_k=0, top_p=1.0, temperature=1.0),
    ],
    ids=["greedy", "greedy+penalties", "default", "plain draw"],
)
def test_non_finite_logits_are_a_clear_error_never_a_token(row, options):
    import warnings

    logits = _broken_rows()[row]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way either
        with pytest.raises(
            EngineError,
            match=r"^The model produced invalid numbers .*the model files may be "
            r"damaged: convert it again\.$",
        ):
            Sampler(options).next_token(logits, seen_ids=[1, 2, 3])


def test_masked_tokens_and_finite_logits_give_the_same_tokens_as_before():
    """-inf alone means "never this token" and is fine; finite rows pick what argmax and the
    seeded draw picked before the check existed."""
    logits = random_logits(5)
    masked = logits.copy()
    masked[np.argsort(logits)[-3:]] = -np.inf
    greedy = Sampler(SamplingOptions(greedy=True, presence_penalty=1.5))
    assert greedy.next_token(masked) == int(np.argsort(logits)[-4])
    for seed in range(5):
        seen = [int(i) for i in np.argsort(logits)[-2:]]
        expected = int(np.argmax(apply_penalties(logits, seen, 1.0, 1.5)))
        assert greedy.next_token(logits, seen) == expected
        options = SamplingOptions(seed=seed)
        scores = Sampler(options).process(logits, seen)
        kept = np.flatnonzero(np.isfinite(scores))
        probs = np.exp(scores[kept].astype(np.float64) - scores[kept].max())
        draw = int(kept[np.random.default_rng(seed).choice(kept.size, p=probs / probs.sum())])
        assert Sampler(options).next_token(logits, seen) == draw


def test_settings_that_overflow_the_scores_are_refused_clearly():
    import warnings

    with warnings.catch_warnings(), pytest.raises(EngineError, match="push the scores out of range"):
        warnings.simplefilter("error")
        Sampler(SamplingOptions(temperature=1e-40, top_p=1.0, top_k=0, seed=0)).next_token(random_logits(6))
