"""What the user chose on the first page, and what the Hub says about it (Qt-free).

The pages pass one SetupChoice along: the choose page fills it in, the download page adds the
checkpoint folder it fetched, the convert page reads both, the verify page reads `model_dir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

import httpx2

from exporter.config import ModelConfig, parse_config
from exporter.download import DownloadPlan, plan_download
from exporter.errors import DownloadError
from exporter.export import ExportOptions

DEFAULT_REPO_ID = "Qwen/Qwen3-VL-4B-Instruct"
PRECISION_CHOICES = (
    ("int4", "4-bit weights (recommended: smaller and faster)"),
    ("fp32", "32-bit float weights (about 4x larger and slower)"),
)
FAST_PREFILL = "int8"  # ExportOptions.prefill of the "Faster first answer" box: int8 weights read prompts


class Mode(Enum):
    DOWNLOAD = "download"  # Hub -> HF cache -> convert -> verify
    CONVERT = "convert"  # a checkpoint folder the user has -> convert -> verify
    VERIFY = "verify"  # an artifact folder the user has -> verify


@dataclass
class SetupChoice:
    mode: Mode
    target_dir: Path  # where the converted model goes
    repo_id: str = DEFAULT_REPO_ID
    revision: str = "main"
    precision: str = "int4"
    prefill: str | None = None  # FAST_PREFILL when the user asked for the faster first answer
    source_dir: Path | None = None  # the checkpoint to convert, or the artifact folder to verify
    source_info: dict | None = None  # recorded in the manifest: where the checkpoint came from
    plan: DownloadPlan | None = None
    replace_target: bool = False  # the target holds an Iris model that the new one replaces

    @property
    def model_dir(self) -> Path:
        """The artifact folder the app will use once the wizard finishes."""
        if self.mode is Mode.VERIFY and self.source_dir is not None:
            return self.source_dir
        return self.target_dir

    def export_options(self) -> ExportOptions:
        return ExportOptions(self.precision, overwrite=self.replace_target, prefill=self.prefill)


@dataclass(frozen=True)
class HubEstimate:
    """The download plan plus the model's config, so the converted size is known before downloading."""

    plan: DownloadPlan
    config: ModelConfig


def estimate_hub_download(repo_id: str, revision: str = "main") -> HubEstimate:
    """Ask the Hub for the file list and config.json; writes nothing to disk (the config is read in memory)."""
    plan = plan_download(repo_id, revision)
    return HubEstimate(plan, parse_config(_read_config(plan)))


def _read_config(plan: DownloadPlan) -> dict:
    cached = plan.snapshot_dir / "config.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    from huggingface_hub import constants
    from huggingface_hub.file_download import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(plan.repo_id, "config.json", revision=plan.commit_sha)
    try:
        response = get_session().get(
            url, headers=build_hf_headers(), follow_redirects=True, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
        )
        hf_raise_for_status(response)
        raw = response.json()
    except (httpx2.HTTPError, OSError, ValueError) as error:  # HfHubHTTPError is an httpx2.HTTPError
        raise DownloadError(f"Could not read config.json of {plan.repo_id} from the Hub: {error}") from error
    if not isinstance(raw, dict):
        raise DownloadError(f"config.json of {plan.repo_id} is not a JSON object.")
    return raw


class PageId(IntEnum):
    CHOOSE = 0
    DOWNLOAD = 1
    CONVERT = 2
    VERIFY = 3


NEXT_PAGE = {Mode.DOWNLOAD: PageId.DOWNLOAD, Mode.CONVERT: PageId.CONVERT, Mode.VERIFY: PageId.VERIFY}


def split_repo_text(text: str) -> tuple[str, str]:
    """'org/name@revision' -> ('org/name', 'revision'); the revision defaults to main, as in the CLI."""
    repo_id, _, revision = text.strip().partition("@")
    return repo_id.strip(), revision.strip() or "main"
