"""Hub and disk failures during a download, turned into messages a person can act on."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import DiskSpaceError, DownloadError, ExportError


@contextmanager
def hub_errors(repo_id: str, revision: str, filename: str | None = None, folder: Path | None = None) -> Iterator[None]:
    """Re-raise what goes wrong inside as a DownloadError (or DiskSpaceError) with a clear message."""
    try:
        yield
    except ExportError:
        raise
    except Exception as error:
        explained = explain_hub_error(error, repo_id, revision, filename, folder)
        if explained is None:
            raise
        raise explained from error


def explain_hub_error(
    error: Exception, repo_id: str, revision: str, filename: str | None, folder: Path | None
) -> ExportError | None:
    """The error a person can act on, or None for one that is not the Hub's, the network's or the disk's."""
    what = f"{filename} of {repo_id}" if filename else repo_id
    message = _hub_refusal(error, repo_id, revision, what) or _connection_failure(error, what)
    return DownloadError(message) if message else _write_failure(error, what, folder)


def _hub_refusal(error: Exception, repo_id: str, revision: str, what: str) -> str | None:
    """The Hub answered, but not with the file: no such model or revision, no access, or its own trouble."""
    page = f"{constants.ENDPOINT}/{repo_id}"
    response = getattr(error, "response", None) if isinstance(error, HfHubHTTPError) else None
    status = response.status_code if response is not None else 0
    if isinstance(error, GatedRepoError):
        return (
            f"{repo_id} is a gated model: open {page}, log in and accept its license, then sign in "
            "here with an access token of that account (or run `hf auth login`)."
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"No model named '{repo_id}' on the Hugging Face Hub. Check the spelling; if it is private, "
            "sign in with an access token that can read it."
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id} has no revision '{revision}'. Use 'main' or an existing branch, tag or commit."
    if status == 401:
        return (
            f"The Hub refused access to {what} (401 Unauthorized): your access token is missing, invalid "
            f"or expired. If the model is gated, accept its license on {page} and sign in with a valid token."
        )
    if status == 403:
        return (
            f"Access to {what} is forbidden (403). The model may be gated or private: accept its license "
            f"on {page} with your account, and make sure your token has read access."
        )
    if status == 404:
        return f"Not found on the Hub (404): {what} at revision {revision}."
    if status == 429:
        return "The Hub is rate-limiting this computer (429 Too Many Requests). Wait a while and try again."
    if status >= 500:
        return (
            f"The Hugging Face Hub had a server error ({status}) while sending {what}. "
            "This is usually temporary: try again in a few minutes."
        )
    return f"The Hub answered HTTP {status} for {what}: {error}" if status else None


def _connection_failure(error: Exception, what: str) -> str | None:
    """The Hub could not be asked: offline mode, no connection, no answer in time."""
    if isinstance(error, OfflineModeIsEnabled):
        return "Downloads are disabled because HF_HUB_OFFLINE is set. Unset it to download the model."
    if isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout, LocalEntryNotFoundError)):
        return (
            f"Cannot reach the Hugging Face Hub ({constants.ENDPOINT}). Check your internet connection "
            "and proxy settings, then try again."
        )
    if isinstance(error, httpx2.TimeoutException):
        return f"The Hugging Face Hub did not answer in time for {what}. Try again later."
    if isinstance(error, httpx2.TransportError):
        return f"The connection to the Hugging Face Hub failed for {what} ({error}). Try again."
    return None


def _write_failure(error: Exception, what: str, folder: Path | None) -> ExportError | None:
    """The download arrived but could not be stored: a full disk, or another write error."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(
            f"The disk is full: cannot write {what} into {folder}. Free up space and try "
            "again; what was downloaded so far is kept."
        )
    if isinstance(error, OSError):
        return DownloadError(f"Cannot write the download of {what} into {folder}: {error.strerror or error}.")
    return None
