"""Errors the exporter raises; each message says what is wrong and, where it can, what to do."""


class ExportError(Exception):
    """Base class: the export cannot go on. Nothing complete-looking has been written."""


class UnsupportedModelError(ExportError):
    """The checkpoint is not a Qwen3-VL model this exporter knows."""


class CheckpointError(ExportError):
    """The checkpoint folder is broken: unreadable config, bad safetensors, wrong tensors."""


class DiskSpaceError(ExportError):
    """Not enough free disk space for the artifacts."""


class ExportCancelled(ExportError):
    """The caller asked to stop."""


class DownloadError(ExportError):
    """The checkpoint could not be fetched from the Hub (network, access, missing repo or revision)."""


class TargetBusyError(ExportError):
    """Another conversion is writing the same artifact folder right now."""


class TargetFolderError(ExportError):
    """The artifact folder cannot be created or written (a file in the way, read-only, no permission)."""
