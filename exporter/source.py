"""SOURCE on the command line: a checkpoint folder, or a Hub id `organisation/model[@revision]`.

A missing folder is named as such: a typo in a path must not turn into a message about the Hub.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DownloadError, ExportError

HUB_EXAMPLE = "Qwen/Qwen3-VL-4B-Instruct"


def resolve_source(text: str) -> tuple[Path, dict]:
    """The checkpoint folder for `text` (downloaded first for a Hub id) and how to record it."""
    from .download import download_checkpoint, split_hub_id

    path = Path(text).expanduser()
    if path.is_dir():
        return path, {"kind": "folder", "path": str(path.absolute())}
    if path.exists():
        raise ExportError(
            f"{text} is a file; SOURCE is a checkpoint folder or a Hugging Face model id such as {HUB_EXAMPLE}"
        )
    hub = split_hub_id(text)
    if hub is None:
        if "/" in text or "\\" in text or text.startswith(("~", ".")):
            raise ExportError(f"There is no folder {path.absolute()}. Check the path of the checkpoint folder.")
        raise ExportError(
            f"'{text}' is neither a folder nor a Hugging Face model id "
            f"(organisation/model[@revision], such as {HUB_EXAMPLE})"
        )
    repo, revision = hub
    print(f"Downloading {repo}{'' if revision == 'main' else '@' + revision} from Hugging Face ...", flush=True)
    try:
        folder = download_checkpoint(repo, revision)
    except DownloadError as error:
        if "@" in text:
            raise
        # 'models/qwen' may have been meant as a relative path: the Hub's answer alone would mislead.
        raise DownloadError(f"{error} (If you meant a folder: there is no folder {path.absolute()}.)") from None
    return Path(folder), {"kind": "hub", "repo_id": repo, "revision": revision, "commit": Path(folder).name}
