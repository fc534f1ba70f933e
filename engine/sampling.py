"""Next-token choice from a logits vector, with transformers' logits-processor semantics.

Order as in transformers' generate: penalties, then temperature, top-k, top-p, then a draw.
Repetition penalty divides positive logits and multiplies negative ones (once per distinct
token); presence penalty (not in transformers; the vLLM/OpenAI rule the model card's advice
refers to) subtracts a constant once per distinct token, and frequency penalty (OpenAI's) a
constant per occurrence. All look at the token ids the caller passes, normally the tokens
generated so far in this answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from engine.errors import EngineError


@dataclass(frozen=True)
class SamplingOptions:
    """Defaults: the checkpoint's generation_config.json plus the model card's VL advice
    (presence_penalty 1.5). max_new_tokens is an app choice for CPU speed (card: up to 16384)."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20  # 0 disables top-k
    repetition_penalty: float = 1.0
    presence_penalty: float = 1.5
    frequency_penalty: float = 0.0
    max_new_tokens: int = 1024
    seed: int | None = None
    greedy: bool = False

    def __post_init__(self):
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature must be above 0 (got {self.temperature}); use greedy for 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive (got {self.top_k})")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be above 0 (got {self.repetition_penalty})")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")

    @classmethod
    def from_generation_config(cls, config: dict, **overrides) -> SamplingOptions:
        """Options from a generation_config.json dict; keys it lacks keep the class defaults."""
        values = {f.name: config[f.name] for f in fields(cls) if f.name in config}
        if "do_sample" in config:
            values["greedy"] = not config["do_sample"]
        values.update(overrides)
        return cls(**values)


def argmax_options(**given) -> dict:
    """Options for plain argmax decoding, what temperature 0 (or `--greedy`) means everywhere (the
    CLI, the local server, the app's settings): the likeliest token at every step, with no
    repetition or presence penalty unless `given` names one."""
    return {"repetition_penalty": 1.0, "presence_penalty": 0.0, **given, "greedy": True}


def apply_penalties(
    logits: np.ndarray,
    seen_ids: Sequence[int],
    repetition_penalty: float,
    presence_penalty: float,
    frequency_penalty: float = 0.0,
) -> np.ndarray:
    """A penalised float32 copy of `logits`; ids outside the vocabulary are ignored."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if len(seen_ids) == 0 or (repetition_penalty == 1.0 and presence_penalty == 0.0 and frequency_penalty == 0.0):
        return out
    ids, counts = np.unique(np.asarray(seen_ids, dtype=np.int64), return_counts=True)
    inside = (ids >= 0) & (ids < out.shape[-1])
    ids, counts = ids[inside], counts[inside]
    if repetition_penalty != 1.0:
        picked = out[ids]
        penalty = np.float32(repetition_penalty)
        out[ids] = np.where(picked < 0, picked * penalty, picked / penalty)
    if presence_penalty != 0.0:
        out[ids] -= np.float32(presence_penalty)
    if frequency_penalty != 0.0:
        out[ids] -= np.float32(frequency_penalty) * counts.astype(np.float32)
    return out


def filter_logits(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Temperature, top-k, top-p; removed entries become -inf (transformers' warpers)."""
    out = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    if 0 < top_k < out.shape[-1]:
        kth = np.partition(out, -top_k)[-top_k]
        out = np.where(out < kth, np.float32(-np.inf), out)  # ties with the k-th survive
    if top_p < 1.0:
        kept = np.flatnonzero(np.isfinite(out))
        order = kept[np.argsort(out[kept], kind="stable")]  # ascending, as transformers
        values = out[order]
        probs = np.exp(values - values.max())
        cumulative = np.cumsum(probs / probs.sum(dtype=np.float32), dtype=np.float32)
        remove = cumulative <= np.float32(1 - top_p)
        remove[-1] = False  # keep at least one token
        out = out.copy()
        out[order[remove]] = -np.inf
    return out


class Sampler:
    """Picks next tokens for one answer; a fixed seed makes the draws repeatable."""

    def __init__(self, options: SamplingOptions = SamplingOptions()):
        self.options = options
        self._rng = np.random.default_rng(options.seed)

    def process(self, logits: np.ndarray, seen_ids: Sequence[int] = ()) -> np.ndarray:
        """The logits the draw uses: penalised, and warped unless greedy."""
        o = self.options
        out = apply_penalties(logits, seen_ids, o.repetition_penalty, o.presence_penalty, o.frequency_penalty)
        if o.greedy:
            return out
        return filter_logits(out, o.temperature, o.top_k, o.top_p)

    def next_token(self, logits: np.ndarray, seen_ids: Sequence[int] = ()) -> int:
        raw = np.asarray(logits).reshape(-1)
        _check_finite(raw)
        with np.errstate(over="ignore", invalid="ignore"):  # overflowing settings are checked below
            scores = self.process(raw, seen_ids)
        if self.options.greedy:
            return int(np.argmax(scores))
        candidates = np.flatnonzero(np.isfinite(scores))
        if candidates.size == 0 or np.isposinf(scores).any():
            o = self.options
            raise EngineError(
                f"The sampling settings (temperature {o.temperature}, repetition penalty "
                f"{o.repetition_penalty}) push the scores out of range; use greedy decoding."
            )
        values = scores[candidates].astype(np.float64)
        probs = np.exp(values - values.max())
        probs /= probs.sum()
        return int(candidates[self._rng.choice(candidates.size, p=probs)])


def _check_finite(logits: np.ndarray) -> None:
    """Refuse NaN, +inf or all -inf scores: argmax would read them as token 0 ("!") and the
    draw would fail. -inf alone is a legitimate "never this token"."""
    if np.isfinite(logits).all():
        return
    if np.isnan(logits).any() or np.isposinf(logits).any() or not np.isfinite(logits).any():
        raise EngineError(
            "The model produced invalid numbers (NaN or infinite scores) instead of an "
            "answer; the model files may be damaged: convert it again."
        )
