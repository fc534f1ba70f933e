"""Bad input gets a clear error and writes nothing; a failed or cancelled export can be re-run."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from pathlib import Path

import pytest

from engine.manifest import Manifest
from exporter.config import load_config, parse_config
from exporter.errors import CheckpointError, DiskSpaceError, ExportCancelled, ExportError, UnsupportedModelError
from exporter.export import ExportOptions, export_model
from tests.fixtures.tiny_checkpoint import DATA


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint[0], folder)
    return folder


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "no partial folder, no lock file"


def _rewrite_safetensors(path: Path, edit) -> None:
    """Apply `edit(header_dict)` to a safetensors file's header, keeping the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * ((-len(new)) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data)


def test_real_config_parses_with_legacy_keys():
    cfg, _ = load_config(DATA)
    assert cfg.text.rope_theta == 5_000_000 and cfg.text.mrope_section == (24, 20, 20)
    assert cfg.text.head_dim == 128 and cfg.text.num_key_value_heads == 8
    assert cfg.vision.deepstack_visual_indexes == (5, 11, 17) and cfg.vision.grid_side == 48
    assert cfg.vision.patch_dim == 1536 and cfg.image_token_id == 151655


def test_transformers_v5_config_style_parses_the_same(tiny_checkpoint, tmp_path):
    """save_pretrained writes rope_parameters instead of rope_scaling/rope_theta."""
    tiny_checkpoint[1].config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in raw["text_config"] and "rope_scaling" not in raw["text_config"]
    legacy, _ = load_config(tiny_checkpoint[0])
    v5, _ = load_config(tmp_path)
    assert v5 == legacy


def test_an_image_processor_that_does_not_fit_the_vision_tower_is_refused_before_converting(ckpt_copy, tmp_path):
    path = ckpt_copy / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "merge_size": 4}))
    with pytest.raises(CheckpointError, match="image processor has merge_size 4 but the vision tower has 2"):
        export_model(ckpt_copy, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_unsupported_architecture_is_named():
    raw = json.loads((DATA / "config.json").read_text())
    raw["architectures"] = ["Qwen2_5_VLForConditionalGeneration"]
    raw["model_type"] = "qwen2_5_vl"
    with pytest.raises(UnsupportedModelError, match="Qwen2_5_VLForConditionalGeneration"):
        parse_config(raw)


def test_a_checkpoint_of_another_model_type_is_named_by_it(ckpt_copy, tmp_path):
    """config.json says 'llava': the message says so, and what Iris converts, not the class name alone."""
    raw = json.loads((ckpt_copy / "config.json").read_text())
    raw["model_type"] = "llava"
    (ckpt_copy / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UnsupportedModelError) as caught:
        export_model(ckpt_copy, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("This checkpoint is a 'llava' model")
    assert "model_type 'qwen3_vl'" in message and "Qwen/Qwen3-VL-4B-Instruct" in message
    _assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("bits", [0x7FC0, 0x7F80, 0xFF80], ids=["nan", "inf", "-inf"])  # as bfloat16
def test_nan_or_inf_weights_are_refused_naming_the_tensor(bits, ckpt_copy, tmp_path):
    """A non-finite weight makes the model answer '!!!!'; it is refused, after the vision graph was
    already written (a decoder tensor), and nothing is left."""
    name = "model.language_model.layers.2.mlp.down_proj.weight"
    path = ckpt_copy / "model.safetensors"
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    entry = json.loads(raw[8 : 8 + n])[name]
    assert entry["dtype"] == "BF16"
    at = 8 + n + entry["data_offsets"][0] + 2 * 37  # element 37 of the tensor
    raw[at : at + 2] = struct.pack("<H", bits)
    path.write_bytes(bytes(raw))
    stages = []
    with pytest.raises(
        CheckpointError,
        match=rf"tensor '{name}' holds 1 NaN or infinite value \(the first at "
        rf"\[0, 37\]\)",
    ):
        export_model(ckpt_copy, tmp_path / "out", progress=lambda p: stages.append(p.stage))
    assert "vision" in stages
    _assert_nothing_written(tmp_path / "out")


def test_unreadable_config(ckpt_copy, tmp_path):
    (ckpt_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        export_model(ckpt_copy, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "missing tensor 'model.language_model.norm.weight'"),
        ("unexpected", "unexpected tensor 'model.extra.weight'"),
        ("misshapen", "model.language_model.norm.weight' has shape"),
    ],
)
def test_wrong_tensors_are_named(problem, message, ckpt_copy, tmp_path):
    name = "model.language_model.norm.weight"

    def edit(header):
        if problem == "missing":
            del header[name]
        elif problem == "unexpected":
            header["model.extra.weight"] = dict(header[name])
        else:
            entry = header[name]
            entry["shape"] = [entry["shape"][0] // 2, 2]

    _rewrite_safetensors(ckpt_copy / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")):
        export_model(ckpt_copy, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_corrupt_and_truncated_safetensors(ckpt_copy, tmp_path):
    path = ckpt_copy / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # an interrupted download
    with pytest.raises(CheckpointError, match="truncated"):
        export_model(ckpt_copy, tmp_path / "out")
    path.write_bytes(struct.pack("<Q", 40) + b"\x00garbage" * 5 + raw[48:])
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        export_model(ckpt_copy, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_sharded_checkpoint_exports_the_same_bytes(tiny_checkpoint, tmp_path):
    from tests.fixtures.tiny_checkpoint import TinySpec, make_tiny_checkpoint

    make_tiny_checkpoint(tmp_path / "sharded", TinySpec(), shards=3)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    a = export_model(tmp_path / "sharded", tmp_path / "a", ExportOptions("int4"))
    b = export_model(tiny_checkpoint[0], tmp_path / "b", ExportOptions("int4"))
    ma = Manifest.load(a.out_dir).files
    mb = Manifest.load(b.out_dir).files
    assert ma["decoder.onnx.data"] == mb["decoder.onnx.data"]
    assert ma["vision.onnx.data"] == mb["vision.onnx.data"]


def test_too_little_disk_space_is_refused_before_writing(ckpt_copy, tmp_path, monkeypatch):
    """Sizes in a unit that fits: the tiny model needs megabytes, not '0.0 GB'."""
    import exporter.export as ex

    monkeypatch.setattr(ex.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(DiskSpaceError, match=r"the converted model needs \d+\.\d MB, only 1\.0 MB is free"):
        export_model(ckpt_copy, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_cancel_leaves_nothing_and_a_rerun_works(ckpt_copy, tmp_path):
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p.stage)
        if p.stage == "decoder" and p.done >= 2:
            cancel.set()

    with pytest.raises(ExportCancelled):
        export_model(ckpt_copy, tmp_path / "out", progress=progress, cancel=cancel)
    _assert_nothing_written(tmp_path / "out")
    assert "vision" in seen
    result = export_model(ckpt_copy, tmp_path / "out")
    assert (result.out_dir / "manifest.json").exists()


def test_an_existing_export_is_kept_unless_overwrite(ckpt_copy, tmp_path):
    out = tmp_path / "out"
    export_model(ckpt_copy, out, ExportOptions("int4"))
    with pytest.raises(ExportError, match="already exists"):
        export_model(ckpt_copy, out, ExportOptions("fp32"))
    assert Manifest.load(out).precision == "int4"
    export_model(ckpt_copy, out, ExportOptions("fp32", overwrite=True))
    assert Manifest.load(out).precision == "fp32"


def test_manifest_lists_every_file_with_size_and_sha256(tiny_int4):
    from engine.file_stamps import sha256_file

    manifest = Manifest.load(tiny_int4)
    on_disk = {p.name for p in tiny_int4.iterdir()} - {"manifest.json", ".verified.json"}
    assert (
        set(manifest.files)
        == on_disk
        == {"vision.onnx", "vision.onnx.data", "decoder.onnx", "decoder.onnx.data", "tokenizer.json"}
    )
    for name, rec in manifest.files.items():
        assert rec.size == (tiny_int4 / name).stat().st_size
        assert rec.sha256 == sha256_file(tiny_int4 / name)
    assert manifest.tokens.image == 151655 and manifest.tokens.eos == (151645, 151643)
    assert manifest.tokens.im_end == 151645
    assert "<|vision_start|>" in manifest.chat_template
    assert manifest.image_processor.patch_size == 16
    assert manifest.precision == "int4" and manifest.weights.vision == "int8"


def test_tied_embedding_is_stored_once(tiny_int4):
    """The int4 decoder keeps one copy of the embedding bytes, shared by lookup and lm_head."""
    import onnx

    model = onnx.load(str(tiny_int4 / "decoder.onnx"), load_external_data=False)
    regions = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            regions.setdefault((info["offset"], info["length"]), []).append(t.name)
    shared = [names for names in regions.values() if len(names) > 1]
    assert shared == [["model.language_model.embed_tokens.qweight", "model.language_model.embed_tokens.qweight_rows"]]
    ops = {n.op_type for n in model.graph.node}
    assert {"GatherBlockQuantized", "MatMulNBits", "FusedMatMul", "RotaryEmbedding"} <= ops


@pytest.mark.parametrize("dtype", ["F32", "F16"])
def test_fp32_and_fp16_checkpoints_convert_too(dtype, tiny_checkpoint, tiny_fp32, tmp_path):
    """The same weights stored as F32 give identical bytes; as F16 (exact for these bf16 values
    except the tiniest), the same image embeddings."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from tests.reference import ExportedModel, image_prompt, random_image

    folder = tmp_path / dtype
    shutil.copytree(tiny_checkpoint[0], folder)
    target = torch.float32 if dtype == "F32" else torch.float16
    state = {k: v.to(target) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    out = export_model(folder, tmp_path / "out", ExportOptions("fp32")).out_dir
    got = Manifest.load(out).files
    ref = Manifest.load(tiny_fp32).files
    if dtype == "F32":
        assert got["decoder.onnx.data"] == ref["decoder.onnx.data"]
        assert got["vision.onnx.data"] == ref["vision.onnx.data"]
    prompt = image_prompt(random_image(300, 200, 1))
    ours, _ = ExportedModel(out).encode(prompt)
    expected, _ = ExportedModel(tiny_fp32).encode(prompt)
    assert np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize(
    "field, value", [("kv_cache", "int8"), ("vision", "int3"), ("prefill", "int4"), ("precision", "bf16")]
)
def test_unknown_formats_are_refused_with_the_choices(field, value):
    with pytest.raises(ExportError, match="choose one of"):
        ExportOptions(**{field: value})


def test_the_kv_cache_type_is_fp16_for_int4_and_fp32_for_the_reference(tiny_int4, tiny_fp32):
    import onnx

    for folder, expected, elem in (
        (tiny_int4, "fp16", onnx.TensorProto.FLOAT16),
        (tiny_fp32, "fp32", onnx.TensorProto.FLOAT),
    ):
        assert Manifest.load(folder).decoder.kv_dtype == expected
        graph = onnx.load(folder / "decoder.onnx", load_external_data=False).graph
        caches = [i for i in graph.input if i.name.startswith("past_key_values.")]
        assert caches and {i.type.tensor_type.elem_type for i in caches} == {elem}


def test_a_fresh_export_loads_without_hashing_and_a_changed_file_is_hashed_again(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """The exporter records the digests it took while writing; a later change is still caught."""
    import engine.artifacts as artifacts
    from engine.errors import ArtifactError

    out = tmp_path / "fresh"
    export_model(tiny_checkpoint[0], out, ExportOptions("int4"))
    hashed = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    artifacts.verify_artifacts(out)
    assert hashed == []
    data = out / "decoder.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, new modification time
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="decoder.onnx.data is damaged"):
        artifacts.verify_artifacts(out)
    assert hashed == ["decoder.onnx.data"]
