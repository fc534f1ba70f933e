"""Run a command as on an AVX2-only x86 CPU, natively: the kernels a Zen 1-3 or an AVX2 laptop runs.

    python -m bench.as_avx2 -- python -m pytest -q tests/exporter
    python -m bench.as_avx2 -- python -m bench.run --checkpoint CKPT --workdir DIR

onnxruntime, numpy and the others choose their kernels from the CPUID instruction. `as_avx2.c`,
preloaded into the command and every process it starts, makes CPUID fault (Linux's
ARCH_SET_CPUID, on CPUs and hypervisors with CPUID faulting) and answers it with the AVX-512,
AVX-VNNI and AMX bits cleared, and answers /proc/cpuinfo likewise. Unlike an emulator
(tests/exporter/test_int8_on_avx2.py runs one) it runs at full speed, so the whole suite and the
benchmark can run the AVX2 code paths; the timings are this machine's cores and memory running
them, not those of an AVX2-only processor. Linux x86-64 only, with a C compiler (gcc or cc).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("as_avx2.c")


class Unavailable(RuntimeError):
    """This machine cannot run a process as an AVX2-only CPU."""


def _compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def unavailable_reason() -> str | None:
    """Why masking cannot work here, or None when it can be tried."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return "runs only on Linux x86-64"
    if not _compiler():
        return "needs a C compiler (gcc) to build the preloaded library"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "cannot read /proc/cpuinfo"
    if " cpuid_fault" not in flags:
        return "this CPU or hypervisor cannot make CPUID fault (no cpuid_fault in /proc/cpuinfo)"
    return None


def build_library(cache_dir: Path | None = None) -> Path:
    """The preloaded library, compiled once per source version into `cache_dir`."""
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    source = SOURCE.read_bytes()
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iris-bench"
    library = cache_dir / f"as_avx2-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if library.exists():
        return library
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(
        [_compiler(), "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise Unavailable(f"could not compile {SOURCE.name}: {proc.stderr.strip()[-2000:]}")
    partial.replace(library)
    return library


def environment(library: Path, scratch: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the library preloaded."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(library), env.get("LD_PRELOAD", "")]))
    env["AS_AVX2_DIR"] = str(scratch)  # where each process writes its masked /proc/cpuinfo
    return env


def masked_here() -> bool:
    """Whether this process runs under the mask (its CPU report is then the masked one)."""
    return "AS_AVX2_DIR" in os.environ and "as_avx2" in os.environ.get("LD_PRELOAD", "")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(command) as on an AVX2-only CPU (raises Unavailable where it cannot)."""
    library = build_library()
    with tempfile.TemporaryDirectory(prefix="as-avx2-") as scratch:
        env = environment(library, Path(scratch), kwargs.pop("env", None))
        return subprocess.run(command, env=env, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        return run(command).returncode
    except Unavailable as exc:
        print(f"as_avx2: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
