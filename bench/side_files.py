"""The real checkpoint's small files (config, tokenizer, chat template) for the random checkpoint.

Speed does not depend on weight values, but it does depend on the real config's shapes and on the
real tokenizer (how many tokens a question takes). These files come from the Hub like any download
(huggingface_hub, with its cache and `HF_ENDPOINT`), or from a folder that holds them: a downloaded
checkpoint, or any copy of its small files.
"""

from __future__ import annotations

from pathlib import Path

REPO_ID = "Qwen/Qwen3-VL-4B-Instruct"
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
)


class SideFilesError(Exception):
    """The side files could not be found or fetched; the message says what to do."""


def side_files_folder(source: Path | None = None, repo_id: str = REPO_ID, need_config: bool = True) -> Path:
    """A folder holding the side files (config.json only if `need_config`): `source` if given, else
    the Hub's (cached) copy."""
    needed = [name for name in SIDE_FILES if need_config or name != "config.json"]
    folder = Path(source) if source is not None else _from_hub(repo_id, needed)
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise SideFilesError(f"{folder} lacks {', '.join(missing)} (the side files of {repo_id} are needed)")
    return folder


def _from_hub(repo_id: str, names: list[str]) -> Path:
    from huggingface_hub import hf_hub_download

    from exporter.errors import ExportError
    from exporter.hub_errors import hub_errors

    try:
        with hub_errors(repo_id, "main"):  # the exporter's own messages for offline, 404, gated ...
            paths = [hf_hub_download(repo_id, name) for name in names]
    except ExportError as exc:
        raise SideFilesError(
            f"{exc} Without the Hub, pass --side-files DIR: a folder with {', '.join(names)} "
            "(this repository keeps a copy for its tests in tests/data/qwen3vl)."
        ) from exc
    return Path(paths[0]).parent  # one snapshot folder of the cache holds them all
