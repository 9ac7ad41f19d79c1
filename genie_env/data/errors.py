"""Errors raised when reading datasets; each message names the offending file."""


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt, or inconsistent with ``meta/``."""


class VideoError(DatasetError):
    """A video file is missing, unreadable, or holds the wrong number of frames."""
