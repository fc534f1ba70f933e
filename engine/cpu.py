"""What this processor offers the kernels we run: vendor, model, vector and int8 matrix features.

onnxruntime picks its kernels by these features, and speed and memory choices (threads, whether an
int8 prompt graph pays) depend on them, so the app, the engine's statistics and the benchmark all
name them. Read from what the OS offers: /proc/cpuinfo on Linux, sysctl on macOS, the Win32 API on
Windows; an unknown system gives an honest "unknown" rather than a guess.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field

# Linux /proc/cpuinfo flag -> our name (x86 "flags", ARM64 "Features").
_X86_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve"}
# macOS sysctl keys (Apple Silicon) -> our name.
_MAC_ARM_KEYS = {
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_SVE": "sve",
}
_MAC_X86_KEYS = {
    "hw.optional.avx2_0": "avx2",
    "hw.optional.fma": "fma",
    "hw.optional.f16c": "f16c",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.avx512vnni": "avx512_vnni",
}
# IsProcessorFeaturePresent ids (winnt.h).
_WIN_FEATURES = {40: "avx2", 41: "avx512f", 43: "dotprod"}


@dataclass(frozen=True)
class CpuInfo:
    vendor: str  # "AMD", "Intel", "Apple", "ARM", ... or "unknown"
    model: str  # the marketing name the OS reports
    arch: str  # "x86_64" or "arm64"
    features: frozenset[str] = field(default_factory=frozenset)
    physical_cores: int = 1
    logical_cores: int = 1
    int8_known: bool = True  # False where the OS does not report VNNI/AMX (Windows' feature API)

    def has(self, name: str) -> bool:
        return name in self.features

    @property
    def int8_units(self) -> str:
        """The int8 dot-product hardware onnxruntime's integer GEMMs can use ("" if none)."""
        if self.arch == "x86_64":
            for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")):
                if self.has(flag):
                    return name
            return ""
        if self.has("i8mm"):
            return "i8mm"
        return "dot-product" if self.has("dotprod") else ""

    @property
    def cpu_class(self) -> str:
        """A short key for results that depend on the kernel family (benchmark tables, caches)."""
        if self.arch == "x86_64":
            if self.has("amx_int8"):
                return "x86-amx"
            if self.has("avx512_vnni"):
                return "x86-avx512-vnni"
            if self.has("avx_vnni"):
                return "x86-avx-vnni"
            if self.has("avx2"):
                return "x86-avx2"
            return "x86"
        if self.arch == "arm64":
            return "arm64-i8mm" if self.has("i8mm") else "arm64-dotprod" if self.has("dotprod") else "arm64"
        return self.arch or "unknown"

    def summary(self) -> str:
        """One line for people, e.g. "AMD EPYC, AVX2, no int8 matrix units, 2 cores"."""
        if self.arch == "x86_64":
            vec = "AVX-512" if self.has("avx512f") else "AVX2" if self.has("avx2") else "no AVX2"
        else:
            vec = "NEON" if self.has("neon") or self.arch == "arm64" else self.arch
        units = self.int8_units
        int8 = f"int8 units: {units}" if units else "no int8 matrix units" if self.int8_known else "int8 units unknown"
        cores = f"{self.physical_cores} core{'s' if self.physical_cores != 1 else ''}"
        return f"{self.model}, {vec}, {int8}, {cores}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = sorted(self.features)
        d.update(cpu_class=self.cpu_class, int8_units=self.int8_units, summary=self.summary())
        return d


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's processor (read once per process)."""
    system = platform.system()
    try:
        if system == "Linux":
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                return parse_proc_cpuinfo(fh.read(), platform.machine())
        if system == "Darwin":
            return _macos()
        if system == "Windows":
            return _windows()
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    logical = os.cpu_count() or 1
    return CpuInfo(
        "unknown",
        platform.processor() or "unknown processor",
        _arch(platform.machine()),
        frozenset(),
        max(1, logical // 2),
        logical,
    )


def _arch(machine: str) -> str:
    machine = machine.lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("arm64", "aarch64"):
        return "arm64"
    return machine


def _vendor(vendor_id: str, model: str) -> str:
    text = f"{vendor_id} {model}".lower()
    for needle, name in (
        ("amd", "AMD"),
        ("intel", "Intel"),
        ("apple", "Apple"),
        ("qualcomm", "Qualcomm"),
        ("ampere", "Ampere"),
    ):
        if needle in text:
            return name
    return "ARM" if "0x41" in text else (vendor_id or "unknown")


def parse_proc_cpuinfo(text: str, machine: str) -> CpuInfo:
    """CpuInfo from the text of Linux's /proc/cpuinfo (x86 or ARM64)."""
    arch = _arch(machine)
    fields: dict[str, str] = {}
    cores: set[tuple[str, str]] = set()
    logical = 0
    phys = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            logical += 1
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys or "0", value))
        fields.setdefault(key, value)
    table = _X86_FLAGS if arch == "x86_64" else _ARM_FLAGS
    raw = set((fields.get("flags") or fields.get("Features") or "").split())
    features = frozenset(name for flag, name in table.items() if flag in raw)
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or "unknown processor"
    vendor = _vendor(fields.get("vendor_id") or fields.get("CPU implementer", ""), model)
    logical = logical or os.cpu_count() or 1
    if cores:
        physical = len(cores)
    else:  # no topology lines (some VMs, ARM): x86 usually runs two threads per core, ARM one
        physical = max(1, logical // 2) if arch == "x86_64" else logical
    return CpuInfo(vendor, model, arch, features, physical, logical)


def _sysctl(key: str) -> str:
    out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() if out.returncode == 0 else ""


def _macos() -> CpuInfo:
    arch = _arch(platform.machine())
    keys = _MAC_ARM_KEYS if arch == "arm64" else _MAC_X86_KEYS
    features = frozenset(name for key, name in keys.items() if _sysctl(key) == "1")
    model = _sysctl("machdep.cpu.brand_string") or "unknown processor"
    physical = int(_sysctl("hw.physicalcpu") or 0) or (os.cpu_count() or 1)
    return CpuInfo(_vendor("", model), model, arch, features, physical, os.cpu_count() or physical)


def _windows() -> CpuInfo:
    import ctypes

    present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    features = {name for code, name in _WIN_FEATURES.items() if present(code)}
    arch = _arch(platform.machine())
    if arch == "arm64":
        features.add("neon")
    model = platform.processor() or "unknown processor"
    logical = os.cpu_count() or 1
    return CpuInfo(
        _vendor("", model), model, arch, frozenset(features), max(1, logical // 2), logical, int8_known=arch == "arm64"
    )
