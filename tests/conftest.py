"""Session-wide fixtures: tiny random checkpoints (made by transformers) and their exports."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests that need the (fake) Hub set their own endpoint
warnings.filterwarnings("ignore", message=".*torchvision.*")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(folder, fp32 transformers model) for the default tiny spec, legacy config keys, bf16 on disk."""
    from tests.fixtures.tiny_checkpoint import TinySpec, make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny_ckpt")
    model = make_tiny_checkpoint(folder, TinySpec())
    return folder, model


@pytest.fixture(scope="session")
def tiny_fp32(tiny_checkpoint, tmp_path_factory):
    from exporter.export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("art") / "fp32"
    export_model(tiny_checkpoint[0], out, ExportOptions("fp32"))
    return out


@pytest.fixture(scope="session")
def tiny_int4(tiny_checkpoint, tmp_path_factory):
    from exporter.export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("art") / "int4"
    export_model(tiny_checkpoint[0], out, ExportOptions("int4"))
    return out
