"""User-facing errors, at the bottom of the layers so that every layer can raise them.

Each carries one clear line for the CLI to print (`run_stream.py` catches `UnmaskError`). The stream's
own errors (`stream.errors.SourceError`, `SinkError`) derive from `UnmaskError` too.
"""
from __future__ import annotations

import re

# scheme://userinfo@host: the userinfo runs to the LAST @ before the path, query or fragment
# (FFmpeg accepts rtsp://alice:p@ss@cam/x, whose password is "p@ss").
_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s'\"<>]*@")
# A query parameter whose name suggests a secret: ?password= &passphrase= (SRT) &token=
# &access_token= &key= &api_key= &sig= &X-Amz-Signature= &auth= ... Over-redacting is harmless.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>(?<=[?&;])[\w.~-]*(?:pass|pwd|token|secret|auth|credential|sig|key|session|cookie)"
    r"[\w.~-]*=)[^&;#\s'\"<>]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Hide the credentials of every URL inside `text`: user:password@ becomes ***@, and the
    value of every secret-looking query parameter becomes *** (never print or store secrets)."""
    text = _CREDENTIALS.sub(lambda m: m.group("scheme") + "***@", str(text))
    return _SECRET_PARAMETER.sub(lambda m: m.group("name") + "***", text)


class UnmaskError(Exception):
    """An error the user can act on; str() is a single redacted line."""

    def __init__(self, message: str):
        super().__init__(redact_url(" ".join(str(message).split())))


class ModelError(UnmaskError):
    """A model or backend cannot be loaded."""
