"""Fetch the checkpoint files Iris needs from the Hugging Face Hub: only those, resumable, cancellable.

Why the bytes are not fetched by `hf_hub_download`: in huggingface_hub 2.x it writes each file to a
process-unique temp file that it deletes on any error, so a cancel, a dropped connection or a crash
restarts an 8 GB file from zero; and it reports progress in 10 MB steps with no way to stop between
them. So the bytes are streamed here, into ``blobs/<etag>.incomplete`` of the standard HF cache,
resumed with an HTTP Range request, checked against the hash the Hub publishes and renamed into place
(under the same lock huggingface_hub uses). `hf_hub_download` then links the snapshot exactly as for
its own downloads, so the result is an ordinary HF cache snapshot, and files already cached (by Iris,
transformers or the `hf` CLI) are never fetched again. Xet storage is not used: plain HTTP is what
makes byte-exact resume possible.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx2
from filelock import Timeout as LockTimeout
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.file_download import hf_hub_url, repo_folder_name
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    filter_repo_objects,
    hf_raise_for_status,
    http_stream_backoff,
    validate_repo_id,
)

from . import EXPORTER_VERSION
from .disk_space import check_free_space
from .errors import DownloadError, ExportCancelled
from .hub_errors import hub_errors
from .units import human_bytes

# What the exporter reads. Weights only as safetensors: never remote code or pickled/other formats.
REQUIRED_PATTERNS = (
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    "generation_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
)
NEVER_PATTERNS = ("*.py", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.gguf", "*.onnx", "*.h5", "*.msgpack")

# Waits before re-requesting a file after the connection dropped; the budget restarts whenever
# bytes arrived, so only a connection that stays dead ends the download.
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
PROGRESS_INTERVAL_S = 0.1
_SPEED_WINDOW_S = 3.0
_READ_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PlannedFile:
    filename: str
    size: int
    etag: str  # sha256 for LFS files, git blob sha1 otherwise: the blob's name in the cache and its checksum
    cached: bool  # complete in the HF cache
    partial_bytes: int  # bytes of an interrupted download, resumable

    @property
    def present_bytes(self) -> int:
        return self.size if self.cached else self.partial_bytes


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    revision: str
    commit_sha: str
    cache_dir: Path
    files: tuple[PlannedFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def present_bytes(self) -> int:
        return sum(f.present_bytes for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return self.total_bytes - self.present_bytes

    @property
    def storage_dir(self) -> Path:
        return self.cache_dir / repo_folder_name(repo_id=self.repo_id, repo_type="model")

    @property
    def snapshot_dir(self) -> Path:
        return self.storage_dir / "snapshots" / self.commit_sha


@dataclass(frozen=True)
class DownloadProgress:
    bytes_done: int  # including what was already on disk
    bytes_total: int
    current_file: str
    speed: float  # bytes/s over the last few seconds
    eta: float | None  # seconds; None while the speed is unknown


ProgressCallback = Callable[[DownloadProgress], None]


def split_hub_id(text: str) -> tuple[str, str] | None:
    """``organisation/model[@revision]`` -> (repo id, revision, 'main' if none); None for a path.

    A text whose first part is a local folder (``models/qwen`` with ``models`` here) is a path too.
    """
    text = text.strip()
    if not text or Path(text).expanduser().exists():
        return None
    repo_id, at, revision = text.partition("@")
    if at and any(c.isspace() for c in revision):
        return None
    if not _is_repo_id_syntax(repo_id) or Path(repo_id.split("/")[0]).is_dir():
        return None
    return repo_id, revision or "main"


def _is_repo_id_syntax(text: str) -> bool:
    if text.startswith((".", "/", "~")) or "\\" in text or re.match(r"^[A-Za-z]:", text) or text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def select_files(filenames: list[str]) -> list[str]:
    """The repo files the exporter needs: top-level files matching REQUIRED_PATTERNS, never NEVER_PATTERNS."""
    top_level = [name for name in filenames if "/" not in name]
    return sorted(
        filter_repo_objects(top_level, allow_patterns=list(REQUIRED_PATTERNS), ignore_patterns=list(NEVER_PATTERNS))
    )


def plan_download(
    repo_id: str, revision: str = "main", token: str | None = None, cache_dir: str | Path | None = None
) -> DownloadPlan:
    """Resolve `revision` to a commit and list the needed files with sizes and what the cache already holds."""
    if not _is_repo_id_syntax(repo_id):
        raise DownloadError(f"'{repo_id}' is not a Hugging Face model id (expected 'organisation/model-name').")
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()
    with hub_errors(repo_id, revision):
        info = HfApi().model_info(
            repo_id, revision=revision, files_metadata=True, token=token, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
        )
    siblings = {s.rfilename: s for s in info.siblings or []}
    names = select_files(list(siblings))
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise DownloadError(
            f"{repo_id}@{revision} has no config.json or no *.safetensors weights; Iris needs both "
            f"(found: {', '.join(sorted(siblings)) or 'no files'})."
        )
    plan = DownloadPlan(repo_id, revision, info.sha, cache, ())
    files = []
    for name in names:
        sibling = siblings[name]
        size = sibling.lfs.size if sibling.lfs else sibling.size
        etag = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
        if size is None or not etag:
            raise DownloadError(f"The Hub did not report the size and hash of {name} in {repo_id}.")
        blob = plan.storage_dir / "blobs" / etag
        cached = (plan.snapshot_dir / name).exists() or blob.exists()
        partial = _partial_path(blob)
        partial_bytes = min(partial.stat().st_size, size) if not cached and partial.exists() else 0
        files.append(PlannedFile(name, size, etag, cached, partial_bytes))
    return replace(plan, files=tuple(files))


def download_checkpoint(
    repo_id: str,
    revision: str = "main",
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    token: str | None = None,
) -> Path:
    """Download the needed files into the HF cache and return the snapshot folder holding them.

    Resumes interrupted files, reuses cached ones, raises ExportCancelled soon after `cancel` is set
    (the partial file is kept), DiskSpaceError before writing anything if the disk is too small, and
    DownloadError with a readable message for network, access and not-found problems.
    """
    _raise_if_cancelled(cancel, "")
    plan = plan_download(repo_id, revision, token=token, cache_dir=cache_dir)
    check_free_space(plan.cache_dir, plan.missing_bytes, "the rest of the download")
    meter = _ProgressMeter(plan.total_bytes, plan.present_bytes, progress)
    headers = build_hf_headers(token=token, library_name="iris", library_version=EXPORTER_VERSION)
    headers["Accept-Encoding"] = "identity"  # byte ranges must address the file itself, not a gzip of it
    for planned in plan.files:
        _raise_if_cancelled(cancel, planned.filename)
        if not planned.cached:
            with hub_errors(repo_id, revision, planned.filename, plan.cache_dir):
                _fetch_blob(plan, planned, headers, meter, cancel)
        with hub_errors(repo_id, revision, planned.filename, plan.cache_dir):
            hf_hub_download(repo_id, planned.filename, revision=plan.commit_sha, cache_dir=plan.cache_dir, token=token)
    _remember_revision(plan)
    meter.emit(plan.files[-1].filename, force=True)
    return plan.snapshot_dir


# ---- fetching one file ----------------------------------------------------------------------------


def _partial_path(blob: Path) -> Path:
    return blob.with_name(blob.name + ".incomplete")


def _fetch_blob(
    plan: DownloadPlan,
    planned: PlannedFile,
    headers: dict[str, str],
    meter: _ProgressMeter,
    cancel: threading.Event | None,
) -> None:
    blob = plan.storage_dir / "blobs" / planned.etag
    lock = plan.cache_dir / ".locks" / plan.storage_dir.name / f"{planned.etag}.lock"
    blob.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(lock, cancel, planned.filename):
        if blob.exists():  # another process finished it meanwhile
            meter.advance(planned.size - planned.partial_bytes, planned.filename)
            return
        partial = _partial_path(blob)
        checksum = _Checksum(planned.etag, planned.size)
        have = _hash_existing(partial, planned, checksum, meter, cancel)
        url = hf_hub_url(plan.repo_id, planned.filename, revision=plan.commit_sha)
        delays = iter(RETRY_DELAYS_S)
        while have < planned.size:
            before = have
            try:
                have = _stream(url, headers, partial, have, planned, checksum, meter, cancel)
            except httpx2.TransportError as error:
                have = checksum.length
                if have > before:
                    delays = iter(RETRY_DELAYS_S)
                delay = next(delays, None)
                if delay is None:
                    raise DownloadError(
                        f"The connection dropped while downloading {planned.filename} ({human_bytes(have)} of "
                        f"{human_bytes(planned.size)} received and kept). Check your connection and try again: "
                        f"the download will resume where it stopped. ({type(error).__name__}: {error})"
                    ) from error
                _sleep(delay, cancel, planned.filename)
        if not checksum.matches():
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{planned.filename} arrived damaged (its hash does not match the Hub's). "
                "The damaged copy was deleted; try again."
            )
        os.replace(partial, blob)


def _hash_existing(
    partial: Path,
    planned: PlannedFile,
    checksum: _Checksum,
    meter: _ProgressMeter,
    cancel: threading.Event | None,
) -> int:
    """Feed the bytes of an interrupted download to the checksum; they count as present already."""
    length = partial.stat().st_size if partial.exists() else 0
    if length > planned.size:  # not from this version of the file: start over
        partial.unlink()
        length = 0
    if length:
        with open(partial, "rb") as stream:
            while checksum.length < length and (block := stream.read(min(_READ_BLOCK, length - checksum.length))):
                _raise_if_cancelled(cancel, planned.filename)
                checksum.update(block)
    meter.advance(checksum.length - planned.partial_bytes, planned.filename)
    return checksum.length


def _stream(
    url: str,
    headers: dict[str, str],
    partial: Path,
    offset: int,
    planned: PlannedFile,
    checksum: _Checksum,
    meter: _ProgressMeter,
    cancel: threading.Event | None,
) -> int:
    """Append bytes from `offset` on to `partial` until the response ends; return the new length."""
    request_headers = dict(headers)
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    with http_stream_backoff(
        "GET",
        url,
        headers=request_headers,
        timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
        retry_on_exceptions=(),
        retry_on_status_codes=(408, 429),
    ) as response:
        hf_raise_for_status(response)
        with open(partial, "ab") as out:
            if offset and response.status_code != 206:  # the server ignored the Range: start over
                out.truncate(0)
                checksum.reset()
                meter.advance(-offset, planned.filename)
                offset = 0
            for chunk in response.iter_bytes():
                _raise_if_cancelled(cancel, planned.filename)
                out.write(chunk)
                checksum.update(chunk)
                offset += len(chunk)
                meter.advance(len(chunk), planned.filename)
                if offset > planned.size:
                    raise DownloadError(f"The Hub sent more than the {planned.size} bytes of {planned.filename}.")
    return offset


class _Checksum:
    """The hash the Hub names a blob by: sha256 of an LFS file, git blob sha1 of a regular one."""

    def __init__(self, expected: str, size: int) -> None:
        self.expected, self.size = expected, size
        self.reset()

    def reset(self) -> None:
        self.length = 0
        if len(self.expected) == 64:
            self._hash = hashlib.sha256()
        else:
            self._hash = hashlib.sha1()
            self._hash.update(b"blob %d\0" % self.size)

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.length += len(data)

    def matches(self) -> bool:
        return self.length == self.size and self._hash.hexdigest() == self.expected


# ---- progress, cancel, locks ----------------------------------------------------------------------


class _ProgressMeter:
    """Turns byte counts into throttled DownloadProgress events with a recent-window speed."""

    def __init__(self, total: int, done: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self._callback = total, done, callback
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), done)])
        self._last_emit = 0.0

    def advance(self, nbytes: int, filename: str) -> None:
        self.done += nbytes
        self.emit(filename)

    def emit(self, filename: str, force: bool = False) -> None:
        now = time.monotonic()
        if self._callback is None or (not force and now - self._last_emit < PROGRESS_INTERVAL_S):
            return
        self._last_emit = now
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] > _SPEED_WINDOW_S:
            self._samples.popleft()
        start_time, start_done = self._samples[0]
        speed = max(self.done - start_done, 0) / (now - start_time) if now > start_time else 0.0
        remaining = self.total - self.done
        eta = remaining / speed if speed > 0 else (0.0 if remaining <= 0 else None)
        self._callback(DownloadProgress(self.done, self.total, filename, speed, eta))


def _raise_if_cancelled(cancel: threading.Event | None, filename: str) -> None:
    if cancel is not None and cancel.is_set():
        where = f" during {filename}" if filename else ""
        raise ExportCancelled(f"Download cancelled{where}. What was downloaded is kept and will be resumed.")


def _sleep(seconds: float, cancel: threading.Event | None, filename: str) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        _raise_if_cancelled(cancel, filename)


@contextmanager
def _file_lock(path: Path, cancel: threading.Event | None, filename: str) -> Iterator[None]:
    """huggingface_hub's per-blob lock, waited for in short steps so a cancel still gets through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        _raise_if_cancelled(cancel, filename)
        try:
            with WeakFileLock(path, timeout=0.5):
                yield
                return
        except LockTimeout:
            continue


def _remember_revision(plan: DownloadPlan) -> None:
    """Record branch/tag -> commit like huggingface_hub does, so offline tools find the snapshot."""
    if plan.revision == plan.commit_sha:
        return
    ref = plan.storage_dir / "refs" / plan.revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".tmp")
    tmp.write_text(plan.commit_sha)
    os.replace(tmp, ref)
