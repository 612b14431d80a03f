"""Errors that carry their cause as data.

A bad setting raises `SettingError` (or `SettingTypeError` for a
value of the wrong type), whose `argument` names the setting at fault, e.g.
`"n_embd"` or `"data_dir"`. Callers route such errors by that attribute
(the command line turns it into the option to blame), never by parsing the
message, which is written for people.
"""

from __future__ import annotations


class SettingError(ValueError):
    """A setting with a bad value; `argument` is the setting's name."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


class SettingTypeError(SettingError, TypeError):
    """A setting with a value of the wrong type (also a `TypeError`)."""


class MissingDataError(SettingError, FileNotFoundError):
    """A data file or folder named by a setting does not exist (also a FileNotFoundError)."""


class DataUnavailableError(RuntimeError):
    """A dataset that cannot be had here (e.g. a hub dataset while offline, not cached)."""


class WriteFailedError(OSError):
    """A file could not be written (full disk, read-only or missing location, a path under a
    file); ``path`` is what was being written. Nothing half-written is left behind."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class ModelTooLargeError(SettingError):
    """The run would need more memory than the device has; ``argument`` names the setting
    to change (e.g. ``"preset"`` or ``"batch_size"``), the message gives the numbers."""
