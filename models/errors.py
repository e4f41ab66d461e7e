"""User-facing errors, at the bottom of the layers so that every layer can raise them.

Each carries one clear line for the CLI to print (`run_stream.py` catches `UnmaskError`). The stream's
own errors (`stream.errors.SourceError`, `SinkError`) derive from `UnmaskError` too.
"""
from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s]+@)")


def redact_url(text: str) -> str:
    """Replace user:password@ in every URL inside `text` with ***@ (never print credentials)."""
    return _CREDENTIALS.sub(lambda m: m.group("scheme") + "***@", str(text))


class UnmaskError(Exception):
    """An error the user can act on; str() is a single redacted line."""

    def __init__(self, message: str):
        super().__init__(redact_url(" ".join(str(message).split())))


class ModelError(UnmaskError):
    """A model or backend cannot be loaded."""
