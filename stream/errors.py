"""User-facing errors: each carries one clear line for the CLI to print."""
from __future__ import annotations

# The base error and the model error live at the bottom layer (engines and models raise them too).
from models.errors import ModelError, UnmaskError, redact_url

__all__ = ["ModelError", "SinkError", "SourceError", "UnmaskError", "redact_url"]


class SourceError(UnmaskError):
    """The input cannot be opened or read (missing, corrupt, unreachable, not a video)."""


class SinkError(UnmaskError):
    """The output cannot be created or written."""
