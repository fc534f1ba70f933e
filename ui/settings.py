"""The user's choices, kept in QSettings (organization "Iris", application "Iris").

Everything is read through `load_settings`, which falls back to the default for any missing or
unreadable value, so a hand-edited or older settings file can never stop the app from starting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.image import DETAIL_PRESETS
from engine.sampling import SamplingOptions, argmax_options

IMAGE_DETAILS = tuple(DETAIL_PRESETS)  # "standard", "high": the engine's presets, in its order
_SAMPLING_DEFAULTS = SamplingOptions()


@dataclass(frozen=True)
class AppSettings:
    image_detail: str = "standard"
    temperature: float = _SAMPLING_DEFAULTS.temperature
    top_p: float = _SAMPLING_DEFAULTS.top_p
    top_k: int = _SAMPLING_DEFAULTS.top_k
    presence_penalty: float = _SAMPLING_DEFAULTS.presence_penalty
    max_new_tokens: int = _SAMPLING_DEFAULTS.max_new_tokens
    threads: int = 0  # 0: let onnxruntime choose
    model_dir: str = ""  # "": the default folder in the data folder
    serve_local: bool = False  # the OpenAI-compatible server for other programs (engine/serve)
    serve_port: int = 8088

    def sampling(self) -> SamplingOptions:
        """Temperature 0 means plain argmax with no penalties, as in the engine's CLI and server."""
        options = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        options["max_new_tokens"] = self.max_new_tokens
        if self.temperature == 0:
            return SamplingOptions(**argmax_options(**options))
        return SamplingOptions(presence_penalty=self.presence_penalty, **options)

    def greedy(self) -> AppSettings:
        """These settings decoding greedily, as `python -m engine --greedy`: the one answer the
        model gives, which an automated run can check."""
        return replace(self, temperature=0.0)

    def serve_fields(self) -> tuple[bool, int]:
        """Whether and where the local server runs (no reload needed)."""
        return (self.serve_local, self.serve_port)

    def engine_fields(self) -> tuple:
        """The settings that need the engine to be built again when they change (the image detail
        is not one: it goes with each question)."""
        return (self.model_dir, self.threads)


def open_qsettings() -> QSettings:
    """INI format everywhere: one readable file, and tests can redirect it with QSettings.setPath."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Iris", "Iris")


def use_scratch_settings(folder: Path) -> QSettings:
    """Send this process's settings into `folder`, starting from a copy of the user's choices.

    For automated runs (`main.py --smoke`): they use the user's options but must not leave their
    measurements, or anything else, in the user's real settings file. Every `open_qsettings()`
    after this call opens the copy too."""
    current = load_settings()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    store = open_qsettings()
    save_settings(current, store)
    return store


def load_settings(store: QSettings | None = None) -> AppSettings:
    store = open_qsettings() if store is None else store
    defaults = AppSettings()
    values = {}
    for f in fields(AppSettings):
        default = getattr(defaults, f.name)
        values[f.name] = _coerce(store.value(f"options/{f.name}", default), default)
    if values["image_detail"] not in IMAGE_DETAILS:
        values["image_detail"] = defaults.image_detail
    if not 1 <= values["serve_port"] <= 65535:
        values["serve_port"] = defaults.serve_port
    try:
        settings = AppSettings(**values)
        settings.sampling()  # validates the ranges
    except ValueError:
        return defaults
    return settings


def save_settings(settings: AppSettings, store: QSettings | None = None) -> None:
    settings.sampling()  # refuse to store values the engine would reject
    store = open_qsettings() if store is None else store
    for name, value in asdict(settings).items():
        store.setValue(f"options/{name}", value)
    store.sync()


def resolve_model_dir(settings: AppSettings) -> Path:
    from ui.paths import default_model_dir

    return Path(settings.model_dir).expanduser() if settings.model_dir else default_model_dir()


def _coerce(value, default):
    """QSettings' INI backend hands back strings; turn them into the default's type or give up."""
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(float(value))
        if isinstance(default, float):
            return float(value)
        return str(value) if value is not None else default
    except (TypeError, ValueError):
        return default
