"""What a load trusts in a model folder: the manifest's file list, the stamps of earlier checks,
and the full check on demand."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from engine.artifacts import check_model_files, is_valid_artifact_dir, verify_artifacts
from engine.errors import ArtifactError
from engine.file_stamps import VERIFIED_NAME
from engine.manifest import Manifest


@pytest.fixture
def folder(tiny_int4, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_int4, copy)
    return copy


def flip_byte(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_with_its_modification_time_restored_is_caught(folder):
    verify_artifacts(folder)  # records the stamps: the next load hashes nothing that kept them
    time.sleep(0.05)  # file times tick in a few milliseconds; damage comes later than that
    data = folder / "decoder.onnx.data"
    before = data.stat()
    flip_byte(data, before.st_size // 2 + 12345)  # between the sampled blocks
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(ArtifactError, match="decoder.onnx.data is damaged"):
        verify_artifacts(folder)
    with pytest.raises(ArtifactError, match="decoder.onnx.data is damaged"):
        verify_artifacts(folder)  # and again at the next load


def test_the_sampled_blocks_catch_damage_that_left_the_file_times_alone(folder):
    """Damage that bypassed the file system (simulated by giving the record the new times)."""
    verify_artifacts(folder)
    data = folder / "decoder.onnx.data"
    flip_byte(data, 100)  # inside the first sampled block
    record = json.loads((folder / VERIFIED_NAME).read_text())
    st = data.stat()
    record["decoder.onnx.data"]["stat"] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    (folder / VERIFIED_NAME).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="decoder.onnx.data is damaged"):
        verify_artifacts(folder)


def test_an_unchanged_folder_is_not_hashed_again(folder, monkeypatch):
    import engine.artifacts as artifacts

    verify_artifacts(folder)
    hashed = []
    monkeypatch.setattr(artifacts, "sha256_file", lambda path: hashed.append(path.name) or "0" * 64)
    verify_artifacts(folder)
    assert hashed == []


def _rewrite_manifest(folder, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda m: m.pop("files"), "lists no files"),
        (lambda m: m.update(files={}), "lists no files"),
        (lambda m: m["files"].pop("decoder.onnx.data"), "does not list decoder.onnx.data"),
        (lambda m: m["files"].pop("vision.onnx"), "does not list vision.onnx"),
        (lambda m: m["files"].pop("tokenizer.json"), "does not list tokenizer.json"),
        (lambda m: m["files"]["decoder.onnx"].pop("sha256"), "record of decoder.onnx"),
        (lambda m: m["files"]["decoder.onnx"].update(size="12"), "record of decoder.onnx"),
    ],
)
def test_a_manifest_that_leaves_files_unchecked_is_refused(folder, change, reason):
    _rewrite_manifest(folder, change)
    with pytest.raises(ArtifactError, match=f"manifest.json is damaged: .*{reason}"):
        verify_artifacts(folder)
    assert not is_valid_artifact_dir(folder)


def test_the_full_check_counts_intact_files_names_a_damaged_one_and_can_stop(folder):
    files = Manifest.load(folder).files
    seen = []
    assert check_model_files(folder, progress=lambda name, i, n: seen.append((name, i, n))) == len(files)
    assert [name for name, _, _ in seen] == list(files) and {n for _, _, n in seen} == {len(files)}
    assert check_model_files(folder, should_stop=lambda: True) is None
    flip_byte(folder / "vision.onnx.data", 4097)
    with pytest.raises(ArtifactError, match="vision.onnx.data is damaged.*setup again"):
        check_model_files(folder)
