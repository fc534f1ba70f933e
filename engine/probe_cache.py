"""Kernel measurements remembered per processor and onnxruntime version.

The setup wizard's advice comes from timing kernels on the user's own CPU. Neither the hardware nor
the kernels change between runs, so a measurement is kept in a small JSON file and taken again only
when the processor, its core count or onnxruntime is different (or the file is unreadable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, TypeVar

import onnxruntime as ort

from .cpu import CpuInfo, cpu_info

Advice = TypeVar("Advice")
STEADY = 0.1  # two readings of a gain further apart than this (relative) were disturbed: not stored


class OptionAdvice:
    """What a measurement says of an optional speed-up: offered from `offer_at`, ticked by default
    from `suggest_at` (a subclass gives both and its predicted `gain`)."""

    offer_at: ClassVar[float]
    suggest_at: ClassVar[float]

    @property
    def gain(self) -> float:
        raise NotImplementedError

    @property
    def offered(self) -> bool:
        return self.gain >= self.offer_at

    @property
    def suggested(self) -> bool:
        return self.gain >= self.suggest_at

    def hint(self) -> str:
        """The line the wizard shows beneath the option: the predicted gain on this computer, or why not."""
        raise NotImplementedError


def cache_key(cpu: CpuInfo, version: int) -> str:
    """What a measurement depends on: the processor, its features and cores, onnxruntime."""
    return f"{version}|{cpu.model}|{','.join(sorted(cpu.features))}|{cpu.physical_cores}|{ort.__version__}"


def measured_per_cpu(
    cache_file: Path | None, version: int, kind: type[Advice], measure: Callable[[CpuInfo], Advice]
) -> Advice:
    """`kind` (a dataclass) from `cache_file` when measured on this CPU and onnxruntime, else `measure`d
    now and stored there. `version` belongs to the measurement: raise it when its method changes.

    Advice is measured twice. Other work on the cores can skew a reading either way, and a stored
    reading would stand until the processor changes: so the advice is stored only when the two
    gains agree within STEADY, and the lower one is returned (a disturbed reading never ticks a box)."""
    cpu = cpu_info()
    key = cache_key(cpu, version)
    if cache_file is not None:
        try:
            cached = json.loads(Path(cache_file).read_text(encoding="utf-8"))
            if cached.get("key") == key:
                return kind(**cached["advice"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # missing or stale: measure again
    advice, steady = _measured_twice(measure, cpu)
    if cache_file is not None and steady:
        try:
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            Path(cache_file).write_text(json.dumps({"key": key, "advice": asdict(advice)}), encoding="utf-8")
        except OSError:
            pass  # a read-only data folder only costs a second next time
    return advice


def _measured_twice(measure: Callable[[CpuInfo], Advice], cpu: CpuInfo) -> tuple[Advice, bool]:
    """The lower-gain of two readings, and whether they agreed (a plain measurement: once, steady)."""
    first = measure(cpu)
    if not isinstance(first, OptionAdvice):
        return first, True
    second = measure(cpu)
    low, high = sorted((first, second), key=lambda advice: advice.gain)
    return low, high.gain - low.gain <= STEADY * abs(high.gain)
