"""Moved to :mod:`wrel.core.progress` (data synthesis uses it too, and data must not import
engine); re-exported here for code that imports it from its old place."""

from wrel.core.progress import Progress, format_duration, progress_mode

__all__ = ["Progress", "progress_mode", "format_duration"]
