"""Where the time goes: onnxruntime's per-node traces, summed by operator, for each kind of run.

    python -m bench.profile MODEL_DIR [--context 4096] [--out bench/out/profile.md]

Three scenarios, each in a fresh engine (a trace covers a session's whole life): a 448x448 image
question answered with 16 tokens, an 896x896 image question, and a text prompt that fills a 4k
context followed by 16 tokens. Runs are grouped into vision encodes, prompt chunks (S > 1) and
decode steps (S = 1); the tables give each operator's and each component's share of the group's
node time (nodes are named by where they sit in the model, e.g. /decoder/layers.3/attn/qkv_proj/...),
and how time spreads over the layers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.measure import long_prompt, photo, turn
from engine.engine import Engine, EngineOptions
from engine.sampling import SamplingOptions

_LAYER = re.compile(r"(?:layers|blocks)\.(\d+)")


@dataclass
class RunGroup:
    """Node time by operator, by component and by layer over a set of runs of one session."""

    runs: int = 0
    wall_us: int = 0
    by_op: Counter = field(default_factory=Counter)
    by_component: Counter = field(default_factory=Counter)
    by_layer: Counter = field(default_factory=Counter)


def component_and_layer(node_name: str) -> tuple[str, int | None]:
    """'/decoder/layers.3/attn/qkv_proj/MatMulNBits' -> ('attn/qkv_proj', 3): the scopes the
    exporter names nodes by, without the graph, the layer and the node itself."""
    parts = node_name.strip("/").split("/")[1:-1]
    layer = next((int(m.group(1)) for m in map(_LAYER.fullmatch, parts) if m), None)
    kept = [part for part in parts if not _LAYER.fullmatch(part)]
    return "/".join(kept) or "(unscoped)", layer


def _query_rows(nodes: list[dict]) -> int | None:
    """Tokens in a decoder run: the sequence axis of a decoder layer's rotated query."""
    for node in nodes:
        if node["args"].get("op_name") == "RotaryEmbedding" and node["name"].startswith("/decoder/"):
            shapes = node["args"].get("input_type_shape") or []
            if shapes:
                return int(next(iter(shapes[0].values()))[1])
    return None


def summarize_trace(path: Path) -> dict[str, RunGroup]:
    """Group a trace's runs ("vision", "prompt", "decode") and sum node times per operator."""
    events = json.loads(Path(path).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    groups: dict[str, RunGroup] = defaultdict(RunGroup)
    for run in runs:
        inside = [n for n in nodes if run["ts"] <= n["ts"] <= run["ts"] + run["dur"]]
        rows = _query_rows(inside)
        kind = "vision" if rows is None else ("decode" if rows == 1 else "prompt")
        group = groups[kind]
        group.runs += 1
        group.wall_us += run["dur"]
        for n in inside:
            group.by_op[n["args"]["op_name"]] += n["dur"]
            component, layer = component_and_layer(n["name"].removesuffix("_kernel_time"))
            group.by_component[component] += n["dur"]
            if layer is not None:
                group.by_layer[layer] += n["dur"]
    return dict(groups)


def markdown(title: str, groups: dict[str, RunGroup], top: int = 8) -> str:
    lines = [f"### {title}", ""]
    for kind in ("vision", "prompt", "decode"):
        g = groups.get(kind)
        if not g or not g.runs:
            continue
        total = sum(g.by_op.values()) or 1
        lines.append(f"{kind}: {g.runs} run(s), {g.wall_us / 1e3 / g.runs:.1f} ms per run")
        lines.append("")
        lines.append("| operator | ms per run | share |")
        lines.append("|---|---|---|")
        for op, us in g.by_op.most_common(top):
            lines.append(f"| {op} | {us / 1e3 / g.runs:.1f} | {100 * us / total:.1f} % |")
        lines.append("")
        lines.append("| component | ms per run | share |")
        lines.append("|---|---|---|")
        for name, us in g.by_component.most_common(top):
            lines.append(f"| {name} | {us / 1e3 / g.runs:.1f} | {100 * us / total:.1f} % |")
        lines.append("")
        if g.by_layer:
            per_layer = [us / 1e3 / g.runs for us in g.by_layer.values()]
            slowest = max(g.by_layer, key=g.by_layer.get)
            lines.append(
                f"{len(per_layer)} layers: {sum(per_layer) / len(per_layer):.2f} ms each on average, "
                f"slowest layers.{slowest} at {max(per_layer):.2f} ms"
            )
            lines.append("")
    return "\n".join(lines)


def _merge(into: dict[str, RunGroup], more: dict[str, RunGroup]) -> None:
    for kind, g in more.items():
        mine = into.setdefault(kind, RunGroup())
        mine.runs += g.runs
        mine.wall_us += g.wall_us
        mine.by_op.update(g.by_op)
        mine.by_component.update(g.by_component)
        mine.by_layer.update(g.by_layer)


def profile_scenario(
    model_dir: Path, work: Path, name: str, scenario, threads: int | None, context: int
) -> dict[str, RunGroup]:
    prefix = str(work / f"{name}-")
    engine = Engine(model_dir, EngineOptions(threads=threads, max_context=context, verify=False, profile_prefix=prefix))
    engine.decoder.wait_for_prefill_graph()
    # Measure a fixed number of tokens whatever random weights say: no token ends an answer.
    engine.parts = replace(engine.parts, eos_ids=frozenset())
    scenario(engine)
    groups: dict[str, RunGroup] = {}
    sessions = [engine.vision.session, engine.decoder.session, engine.decoder.prefill_session]
    for session in filter(None, sessions):
        _merge(groups, summarize_trace(Path(session.end_profiling())))
    return groups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--out", help="also write the Markdown here")
    args = ap.parse_args(argv)
    model = Path(args.model_dir)
    greedy = lambda n: SamplingOptions(greedy=True, presence_penalty=0.0, max_new_tokens=n)  # noqa: E731

    def image(side: int, detail: str, tokens: int):
        return lambda e: turn(e.new_conversation(), "Describe this image.", [photo(side, side)], greedy(tokens), detail)

    def long_text(e: Engine):
        turn(e.new_conversation(), long_prompt(e, args.context), (), greedy(16))

    scenarios = [
        ("448x448 image, 16 tokens", "img448", image(448, "standard", 16)),
        ("896x896 image, first token", "img896", image(896, "high", 1)),
        (f"text prompt filling {args.context} tokens, 16 tokens", "long", long_text),
    ]
    parts = []
    with tempfile.TemporaryDirectory(prefix="iris-profile-") as tmp:
        for title, name, scenario in scenarios:
            groups = profile_scenario(model, Path(tmp), name, scenario, args.threads, args.context)
            parts.append(markdown(title, groups))
            print(parts[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
