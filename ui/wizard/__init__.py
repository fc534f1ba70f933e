"""First-run wizard: get Qwen3-VL (download or a folder the user has), convert it, check it."""

from .folders import needs_setup
from .setup_wizard import SetupWizard

__all__ = ["SetupWizard", "needs_setup"]
