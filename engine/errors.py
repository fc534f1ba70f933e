"""Typed errors with messages a user can read; the UI shows `str(error)` as is."""


class EngineError(Exception):
    """Base class for everything the engine reports to its caller."""


class ArtifactError(EngineError):
    """The model folder is missing, partial, corrupt or from an incompatible exporter."""


class ImageError(EngineError):
    """An image cannot be used: not an image, unreadable format, too large, corrupt."""


class ContextFullError(EngineError):
    """The conversation no longer fits in the context window."""
