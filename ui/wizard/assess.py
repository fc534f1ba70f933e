"""Judge the choose page's inputs: what will happen, what it takes, and why Next is refused (Qt-free)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from exporter.config import ModelConfig, load_config
from exporter.errors import ExportError
from exporter.export import ExportOptions, estimate_bytes, free_space_needed
from exporter.target import clean_stale

from .choice import HubEstimate, Mode
from .folders import FolderInfo, FolderKind, inspect_folder, manifest_summary
from .space import SpaceNeed, disks_for
from .units import human_bytes


@dataclass(frozen=True)
class Assessment:
    lines: tuple[str, ...] = ()  # facts worth knowing: sizes, free space, what the folder holds
    problem: str = ""  # why Next is refused, shown in red
    waiting: str = ""  # Next is refused for now, but nothing is wrong (a check is running, a field is empty)
    mode: Mode | None = None  # where Next leads
    source: FolderInfo | None = None  # the user's folder, in folder mode
    replace_target: bool = False

    @property
    def ready(self) -> bool:
        return self.mode is not None and not self.problem and not self.waiting


def assess_download(
    estimate: HubEstimate | None, error: str, pending: bool, target_text: str, options: ExportOptions
) -> Assessment:
    if pending:
        return Assessment(waiting="Checking the size of the download…")
    if error:
        return Assessment(problem=error)
    if estimate is None:
        return Assessment(waiting="Enter the id of a model on the Hugging Face Hub.")
    plan = estimate.plan
    if plan.missing_bytes == 0:
        download = f"Download: {human_bytes(plan.total_bytes)}, already downloaded"
    elif plan.present_bytes:
        download = (
            f"Download: {human_bytes(plan.total_bytes)}, {human_bytes(plan.present_bytes)} of it already "
            "downloaded (it resumes from there)"
        )
    else:
        download = f"Download: {human_bytes(plan.total_bytes)}"
    needs = [SpaceNeed("the download", plan.cache_dir, plan.missing_bytes)]
    return _with_target(Mode.DOWNLOAD, [download], needs, estimate.config, options, target_text)


def assess_folder(folder_text: str, target_text: str, options: ExportOptions) -> Assessment:
    if not folder_text.strip():
        return Assessment(waiting="Choose the folder you already have.")
    info = inspect_folder(Path(folder_text.strip()))
    if info.kind is FolderKind.ARTIFACTS:
        manifest = manifest_summary(info.path)
        made = f", made {manifest.created[:10]}" if manifest and manifest.created else ""
        line = (
            f"An Iris model ({manifest.precision if manifest else 'unknown precision'}{made}): "
            "it is checked and used as is."
        )
        return Assessment(lines=(line,), mode=Mode.VERIFY, source=info)
    if info.kind is FolderKind.DAMAGED:
        return Assessment(
            problem=f"This folder holds an Iris model that cannot be used: {info.detail} "
            "Convert the checkpoint again, or choose another folder."
        )
    if info.kind is FolderKind.EMPTY:
        missing = "There is no folder at" if not info.path.exists() else "This folder is empty:"
        return Assessment(problem=f"{missing} {info.path}.")
    if info.kind is FolderKind.OTHER:
        return Assessment(
            problem="This folder holds neither an Iris model (manifest.json) nor a Hugging Face "
            "checkpoint (config.json and *.safetensors weights)."
        )
    try:
        config, _ = load_config(info.path)
    except ExportError as error:
        return Assessment(problem=str(error))
    line = (
        f"A Hugging Face checkpoint of Qwen3-VL ({config.text.num_hidden_layers} layers, hidden size "
        f"{config.text.hidden_size}): it is converted."
    )
    assessed = _with_target(Mode.CONVERT, [line], [], config, options, target_text)
    return Assessment(assessed.lines, assessed.problem, assessed.waiting, assessed.mode, info, assessed.replace_target)


def _with_target(
    mode: Mode, lines: list[str], needs: list[SpaceNeed], config: ModelConfig, options: ExportOptions, target_text: str
) -> Assessment:
    """Add the converted model's size, the target folder's checks and the free space of every disk used."""
    if not target_text.strip():
        return Assessment(tuple(lines), waiting="Choose where to save the model.", mode=mode)
    target_path = Path(target_text.strip()).expanduser().absolute()
    # What killed conversions left beside the target would eat the space counted below: drop it.
    clean_stale(target_path.parent)
    target = inspect_folder(target_path)
    artifact_bytes = estimate_bytes(config, options)
    plain_bytes = estimate_bytes(config, dataclasses.replace(options, prefill=None))
    lines.append(_size_line(artifact_bytes, artifact_bytes - plain_bytes))
    replace = target.kind in (FolderKind.ARTIFACTS, FolderKind.DAMAGED)
    if replace:
        lines.append(f"The model now in {target.path} is replaced once the new one is complete.")
    elif target.kind is not FolderKind.EMPTY:
        return Assessment(
            tuple(lines),
            mode=mode,
            problem=(
                f"{target.path} already holds other files. Choose an empty or new folder: Iris only replaces a "
                "folder that holds an Iris model."
            ),
        )
    needs = needs + [SpaceNeed("the converted model", target.path.parent, free_space_needed(artifact_bytes))]
    problem = ""
    for disk in disks_for(needs):
        lines.append(f"Free space: {human_bytes(disk.free)} on {disk.anchor} (needed: {human_bytes(disk.needed)})")
        if disk.short and not problem:
            problem = disk.shortage_message()
    return Assessment(tuple(lines), problem=problem, mode=mode, replace_target=replace)


def _size_line(artifact_bytes: int, prefill_bytes: int) -> str:
    line = f"Converted model: about {human_bytes(artifact_bytes)}"
    if prefill_bytes:
        line += f", {human_bytes(prefill_bytes)} of it for the faster first answer"
    return line
