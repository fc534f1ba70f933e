"""The benchmark: full-size random checkpoint -> int4 export -> engine figures, as JSON and Markdown.

    python -m bench.run [--workdir DIR] [--threads N] [--checkpoint DIR | --side-files DIR]

Each step runs in its own process so each peak RSS is that step's own. Not part of the test
suite (CI only smoke-tests this script on the tiny checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(args: list[str]) -> tuple[str, float, float]:
    """stdout, wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    # ru_maxrss of the children waited for so far; children run one at a time, so it is this one's
    # only if it is the largest yet: wait4 gives the exact figure per child.
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{stderr[-2000:]}")
    return stdout, wall, _last_child_rss


_last_child_rss = 0.0


def _wait4_popen():
    """Make Popen.wait use os.wait4 so each child's own peak RSS is known."""
    original = subprocess.Popen._try_wait

    def _try_wait(self, wait_flags):
        global _last_child_rss
        pid, sts, usage = os.wait4(self.pid, wait_flags)
        if pid == self.pid:
            _last_child_rss = usage.ru_maxrss / 1024
        return pid, sts

    subprocess.Popen._try_wait = _try_wait
    return original


def machine() -> dict:
    import numpy
    import onnxruntime

    from bench.as_avx2 import masked_here
    from engine.cpu import cpu_info

    cpu = cpu_info()
    return {
        "masked_as_avx2": masked_here(),
        "cpu": cpu.model,
        "cpu_class": cpu.cpu_class,
        "cpu_summary": cpu.summary(),
        "cpu_features": sorted(cpu.features),
        "logical_cpus": cpu.logical_cores,
        "physical_cores": cpu.physical_cores,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


def machine_line(m: dict, threads: int | None, date: str) -> str:
    """One line naming the processor and software a result was measured with (speed depends on them)."""
    return (
        f"Machine: {m['cpu']} (class {m.get('cpu_class', 'unknown')}: {m.get('cpu_summary', '')}), "
        f"{m['physical_cores']} physical cores ({m['logical_cpus']} logical), "
        f"threads={threads or m['physical_cores']}; Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}, numpy {m['numpy']}; {date}."
        + (
            " Run under bench.as_avx2: this CPU running the kernels of an AVX2-only one."
            if m.get("masked_as_avx2")
            else ""
        )
    )


def markdown(result: dict) -> str:
    m, e, x = result["machine"], result["engine"], result["export"]
    rows = [
        ("export (int4) time / peak RSS", f"{x['seconds']:.0f} s / {x['peak_rss_mb'] / 1024:.2f} GB"),
        ("artifact size", f"{x['bytes'] / 1e9:.2f} GB"),
        (
            "load time: first start after export / next start",
            (f"{e['first_load_s']:.1f} s / " if "first_load_s" in e else "") + f"{e['load_s']:.1f} s",
        ),
        (
            "RSS after load",
            f"{e['rss_after_load_mb'] / 1024:.2f} GB"
            + (
                f" (int8 prompt graph ready after {e['prompt_graph_ready_s']:.1f} s)"
                if "prompt_graph_ready_s" in e
                else ""
            ),
        ),
        ("vision encode 448x448 / 896x896", f"{e['vision_448_s']:.2f} s / {e['vision_896_s']:.2f} s"),
        (
            "time to first token, 448x448 image + question",
            f"{e['ttft_448_s']:.2f} s ({e['prompt_tokens_448']} prompt tokens)",
        ),
        (
            "time to first token, 896x896 image + question",
            f"{e['ttft_896_s']:.2f} s ({e['prompt_tokens_896']} prompt tokens)",
        ),
        ("decode speed", f"{e['decode_tok_s']:.2f} tok/s over {e['decode_tokens']} tokens"),
        ("decode speed with a 4k context", f"{e['decode_tok_s_long_context']:.2f} tok/s"),
        (
            "follow-up question, time to first token",
            f"{e['followup_ttft_s']:.2f} s ({e['followup_prompt_tokens']} new tokens)",
        ),
        ("text prefill", f"{e['prefill_tok_s']:.1f} tok/s ({e['long_prompt_tokens']} tokens)"),
        (
            "peak RSS while filling a 4k context",
            (f"{e['peak_rss_long_context_mb'] / 1024:.2f} GB" if "peak_rss_long_context_mb" in e else "n/a")
            + f" ({e['context_used']} tokens)",
        ),
        ("peak RSS of the whole run (includes the 896x896 image)", f"{e['peak_rss_mb'] / 1024:.2f} GB"),
    ]
    head = machine_line(m, result["threads"], result["date"]) + "\n\n"
    return head + "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--checkpoint", help="use this checkpoint instead of making the full-size random one")
    ap.add_argument("--side-files", help="the real checkpoint's small files for the random one (default: the Hub)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--export-args", default="", help="extra arguments for the exporter")
    args = ap.parse_args(argv)
    _wait4_popen()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else work / "checkpoint"
    if not args.checkpoint and not (ckpt / "model.safetensors.index.json").exists():
        print("making the full-size random checkpoint ...", flush=True)
        side_files = ["--side-files", args.side_files] if args.side_files else []
        run_child(["-m", "bench.make_random_checkpoint", str(ckpt), "--force", *side_files])
    art = work / "int4"
    print("exporting ...", flush=True)
    out, wall, rss = run_child(["-m", "exporter", str(ckpt), str(art), "--overwrite", *args.export_args.split()])
    size = sum(p.stat().st_size for p in art.iterdir())
    export = {"seconds": wall, "peak_rss_mb": rss, "bytes": size}
    if hasattr(os, "sync"):
        os.sync()  # the export's writes are flushed first, so loading does not compete with them
    print("measuring the engine ...", flush=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    first = json.loads(run_child(["-m", "bench.measure", str(art), "--load-only", *threads])[0])
    cmd = ["-m", "bench.measure", str(art), "--decode-tokens", str(args.decode_tokens), "--context", str(args.context)]
    out, _, rss = run_child(cmd + threads)
    engine = json.loads(out)
    engine["first_load_s"] = first["load_s"]
    engine["peak_rss_mb"] = max(engine["peak_rss_mb"], rss)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "machine": machine(),
        "export": export,
        "engine": engine,
        "export_args": args.export_args,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (work / "result.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
