"""The random full-size checkpoint maker, run on a shrunken config, and its tokenizer.json builder.

Ground truths: exporter.checkpoint.Checkpoint and the safetensors library (an independent reader of
the format), transformers' AutoTokenizer, and published facts about the real checkpoint's files.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from bench import make_random_checkpoint as mrc
from bench.tokenizer_json import TokenizerBuildError, build_qwen2_tokenizer, write_tokenizer_json
from exporter.checkpoint import Checkpoint
from exporter.config import load_config
from exporter.tensor_spec import expected_tensors
from tests.fixtures.tiny_checkpoint import DATA, TinySpec, tiny_config_dict

SMALL_SHARD = 6 * 1024 * 1024  # forces the ~21 MB tiny model into several shards


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """The real config.json with tiny hidden sizes and the real vocabulary."""
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(tiny_config_dict(TinySpec()), indent=2))
    return path


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory, tiny_config) -> Path:
    out = tmp_path_factory.mktemp("random_ckpt") / "model"
    mrc.make_random_checkpoint(
        out, side_files=DATA, seed=3, config_path=tiny_config, max_shard_bytes=SMALL_SHARD, log=lambda _msg: None
    )
    return out


def _header(path: Path) -> tuple[int, dict]:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return n, json.loads(fh.read(n))


# --- the checkpoint ----------------------------------------------------------------------------


def test_exporter_checkpoint_opens_it(tiny_out):
    cfg, _ = load_config(tiny_out)
    ckpt = Checkpoint(tiny_out, cfg)  # validates names, shapes, dtypes and offsets
    assert set(ckpt.entries) == set(expected_tensors(cfg))
    assert "lm_head.weight" not in ckpt.entries  # tied, like the real checkpoint
    assert {e.dtype for e in ckpt.entries.values()} == {"BF16"}


def test_shards_and_index_agree(tiny_out):
    index = json.loads((tiny_out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in tiny_out.glob("*.safetensors"))
    assert len(files) >= 2
    assert all(re.fullmatch(rf"model-\d{{5}}-of-{len(files):05d}\.safetensors", f) for f in files)
    assert sorted(set(index["weight_map"].values())) == files
    assert not list(tiny_out.glob("*.partial"))
    total = 0
    for f in files:
        n, header = _header(tiny_out / f)
        assert (8 + n) % 8 == 0
        assert header["__metadata__"] == {"format": "pt"}
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        assert {k for k, v in index["weight_map"].items() if v == f} == set(tensors)
        spans = sorted(v["data_offsets"] for v in tensors.values())
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no holes
        assert 8 + n + spans[-1][1] == (tiny_out / f).stat().st_size
        assert spans[-1][1] <= SMALL_SHARD or len(tensors) == 1  # only an oversized tensor stands alone
        total += spans[-1][1]
    assert index["metadata"]["total_size"] == total


def test_safetensors_library_reads_the_same_values(tiny_out):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    cfg, _ = load_config(tiny_out)
    ckpt = Checkpoint(tiny_out, cfg)
    seen = 0
    for f in sorted(tiny_out.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                t = st.get_tensor(name)
                assert t.dtype == torch.bfloat16
                np.testing.assert_array_equal(t.float().numpy(), ckpt.get(name))
                seen += 1
    assert seen == len(expected_tensors(cfg))


def test_values_have_realistic_magnitudes(tiny_out):
    cfg, raw = load_config(tiny_out)
    ckpt = Checkpoint(tiny_out, cfg)
    init_std = raw["text_config"]["initializer_range"]  # 0.02
    embed = ckpt.get("model.language_model.embed_tokens.weight")
    assert abs(embed.mean()) < 1e-3 and embed.std() == pytest.approx(init_std, rel=0.05)
    for name in (
        "model.language_model.layers.0.mlp.down_proj.weight",
        "model.visual.blocks.0.attn.qkv.weight",
        "model.visual.merger.linear_fc2.weight",
    ):
        w = ckpt.get(name)
        assert w.std() == pytest.approx(init_std, rel=0.1), name
        assert np.abs(w).max() < 20 * init_std
    for name in (
        "model.language_model.norm.weight",
        "model.language_model.layers.1.self_attn.q_norm.weight",
        "model.visual.blocks.2.norm1.weight",
        "model.visual.deepstack_merger_list.0.norm.weight",
    ):
        w = ckpt.get(name)
        assert 0.9 < w.mean() < 1.1 and 0.02 < w.std() < 0.3 and w.min() > 0, name
    for name in (
        "model.visual.blocks.0.attn.qkv.bias",
        "model.visual.merger.norm.bias",
        "model.visual.patch_embed.proj.bias",
    ):
        b = ckpt.get(name)
        assert np.abs(b).max() < 0.1 and b.std() > 1e-3, name
    assert np.isfinite(embed).all()
    # Rows are not copies of one another (the pool is sliced at random offsets).
    assert not np.array_equal(embed[0], embed[1])


def test_side_files_are_copied_and_tokenizer_json_written(tiny_out, tiny_config):
    assert (tiny_out / "config.json").read_bytes() == tiny_config.read_bytes()
    for name in set(mrc.SIDE_FILES) - {"config.json"}:
        assert (tiny_out / name).read_bytes() == (DATA / name).read_bytes(), name
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_out / "tokenizer.json"))
    assert tok.encode("Hello world!").ids == [9707, 1879, 0]  # known ids of the real tokenizer


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_config):
    quiet = dict(side_files=DATA, config_path=tiny_config, log=lambda _msg: None)
    a = mrc.make_random_checkpoint(tmp_path / "a", seed=7, **quiet)
    b = mrc.make_random_checkpoint(tmp_path / "b", seed=7, **quiet)
    c = mrc.make_random_checkpoint(tmp_path / "c", seed=8, **quiet)
    assert a.shards == ["model.safetensors"]  # small enough for one file: no index, as on the Hub
    assert not (tmp_path / "a" / "model.safetensors.index.json").exists()
    blob = lambda r: (r.folder / "model.safetensors").read_bytes()  # noqa: E731
    assert blob(a) == blob(b) and blob(a) != blob(c)


# --- the full-size plan, checked against the real checkpoint without writing it ---------------


def test_full_size_plan_matches_the_real_checkpoint():
    """Facts about Qwen/Qwen3-VL-4B-Instruct's files as published on the Hub: 713 BF16 tensors,
    index total_size 8875631616, two shards of 231 and 482 tensors, shard 1 is 4967229296 bytes."""
    cfg = mrc.read_config(DATA / "config.json")
    shards = mrc.plan_shards(expected_tensors(cfg), mrc.MAX_SHARD_BYTES)
    assert [s.file_name for s in shards] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert [len(s.tensors) for s in shards] == [231, 482]
    assert sum(s.nbytes for s in shards) == 8875631616
    assert len(mrc.safetensors_header(shards[0].tensors)) + shards[0].nbytes == 4967229296


# --- the command line and bad input ------------------------------------------------------------


def test_cli_refuses_non_empty_folder_then_force_replaces_old_weights(tmp_path, tiny_config, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "model-00001-of-00009.safetensors").write_bytes(b"stale")
    assert mrc.main([str(out), "--side-files", str(DATA), "--config", str(tiny_config)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert mrc.main([str(out), "--side-files", str(DATA), "--config", str(tiny_config), "--force", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "done" in printed and "GB" in printed
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    Checkpoint(out, load_config(out)[0])


def test_not_enough_disk_space_is_refused_before_writing(tmp_path, tiny_config, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(mrc.shutil, "disk_usage", lambda _p: usage._replace(free=10 * 1024 * 1024))
    assert mrc.main([str(tmp_path / "ckpt"), "--side-files", str(DATA), "--config", str(tiny_config)]) == 2
    assert "GB free" in capsys.readouterr().err
    assert not list((tmp_path / "ckpt").iterdir())


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot be read"),
        (json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}), "Qwen3-VL"),
    ],
)
def test_bad_config_gets_a_clear_message(tmp_path, capsys, content, message):
    cfg = tmp_path / "config.json"
    cfg.write_text(content)
    assert mrc.main([str(tmp_path / "out"), "--side-files", str(DATA), "--config", str(cfg)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the side files: from the Hub, or from a folder ----------------------------------------------


def _side_files_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in mrc.SIDE_FILES:
        shutil.copy(DATA / name, repo / name)
    (repo / "model.safetensors").write_bytes(b"weights the benchmark must not download")
    return repo


def test_side_files_come_from_the_hub_and_only_they(tmp_path, tiny_config, monkeypatch):
    """Against a local server in the Hub's layout: huggingface_hub fetches the small files only."""
    from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

    with FakeHub(_side_files_repo(tmp_path), "Qwen/Qwen3-VL-4B-Instruct") as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")
        assert mrc.main([str(tmp_path / "ckpt"), "--config", str(tiny_config)]) == 0
        assert hub.body_requests() and not hub.body_requests("model.safetensors")
    for name in set(mrc.SIDE_FILES) - {"config.json"}:
        assert (tmp_path / "ckpt" / name).read_bytes() == (DATA / name).read_bytes(), name


def test_without_the_hub_the_message_names_the_way_out(tmp_path, tiny_config, monkeypatch, capsys):
    from tests.fixtures.fake_hub import FakeHub, point_huggingface_hub_at

    with FakeHub(_side_files_repo(tmp_path), "Qwen/Qwen3-VL-4B-Instruct") as hub:
        hub.fail(503)
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "hf_home")
        assert mrc.main([str(tmp_path / "ckpt"), "--config", str(tiny_config)]) == 2
    err = capsys.readouterr().err
    assert "Cannot reach the Hugging Face Hub" in err and "--side-files" in err  # the exporter's words
    assert not (tmp_path / "ckpt").exists()


def test_with_its_own_config_the_side_files_need_no_config(tmp_path, tiny_config):
    folder = _side_files_repo(tmp_path)
    (folder / "config.json").unlink()
    assert mrc.main([str(tmp_path / "ckpt"), "--side-files", str(folder), "--config", str(tiny_config)]) == 0
    assert (tmp_path / "ckpt" / "config.json").read_bytes() == tiny_config.read_bytes()


def test_a_side_files_folder_missing_a_file_is_named(tmp_path, tiny_config, capsys):
    folder = _side_files_repo(tmp_path)
    (folder / "merges.txt").unlink()
    assert mrc.main([str(tmp_path / "ckpt"), "--side-files", str(folder), "--config", str(tiny_config)]) == 2
    assert "lacks merges.txt" in capsys.readouterr().err


# --- tokenizer.json without transformers -------------------------------------------------------

TEXTS = [
    "Hello world!",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n",
    "这是一只猫。日本語のテキスト、한국어 문장도 있습니다",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "def f(x):\n    return x ** 2  # square\n\n\tif a != b:\n\t\tpass\r\n",
    "Numbers 1234567 3.14159 -42 1e10 0x1F 2025-10-15",
    '<think>\nstep</think> <tool_call>{"name": "f"}</tool_call><|endoftext|>',
    "  leading spaces,   inner   runs and trailing   ",
    "cafe\u0301 vs café, I'M we'll THEY'RE don't",
]


@pytest.fixture(scope="module")
def tokenizers_pair(tmp_path_factory):
    """(transformers' AutoTokenizer from the three side files, ours reloaded from tokenizer.json)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    src = tmp_path_factory.mktemp("tok_src")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(DATA / name, src / name)
    reference = AutoTokenizer.from_pretrained(src)
    ours_path = write_tokenizer_json(src, tmp_path_factory.mktemp("tok_out") / "tokenizer.json")
    return reference, Tokenizer.from_file(str(ours_path))


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_matches_transformers(tokenizers_pair, text):
    reference, ours = tokenizers_pair
    ids = ours.encode(text).ids
    assert ids == reference(text)["input_ids"]
    assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids, skip_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_tokenizer_json_vocab_and_special_tokens(tokenizers_pair):
    reference, ours = tokenizers_pair
    assert ours.get_vocab_size() == len(reference) == 151669
    assert ours.get_vocab() == reference.get_vocab()
    assert ours.token_to_id("<|image_pad|>") == 151655 and ours.token_to_id("</think>") == 151668


def test_tokenizer_build_reports_missing_files(tmp_path):
    shutil.copy(DATA / "vocab.json", tmp_path / "vocab.json")
    with pytest.raises(TokenizerBuildError, match="merges.txt"):
        build_qwen2_tokenizer(tmp_path)
