"""Unmask's streaming side: sources, tracking, reconstruction, compositing, sinks."""
from stream.errors import ModelError, SinkError, SourceError, UnmaskError
from stream.unmasker import Face, Result, Unmasker

__all__ = ["Unmasker", "Result", "Face", "UnmaskError", "SourceError", "SinkError", "ModelError"]
