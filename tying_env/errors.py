"""Errors that carry their cause as data.

A bad setting raises `SettingError` (or `SettingTypeError` for a
value of the wrong type), whose `argument` names the setting at fault, e.g.
`"n_embd"` or `"data_dir"`. Callers route such errors by that attribute
(the command line turns it into the option to blame), never by parsing the
message, which is written for people.
"""

from __future__ import annotations

from typing import Any


class SettingError(ValueError):
    """A setting with a bad value; `argument` is the setting's name.

    Built as ``SettingError(argument, message)``. ``SettingError(message)`` also works, for
    code that re-raises an exception as ``type(e)(text) from e`` (``gymnasium.make`` does so
    with a `TypeError` from the environment's constructor): the setting is then the one named
    by the exception it was raised from.
    """

    def __init__(self, argument: str | None, message: str | None = None):
        if message is None:
            super().__init__(argument or "")
            self._argument: str | None = None
        else:
            super().__init__(message)
            self._argument = argument

    @property
    def argument(self) -> str | None:
        """The setting at fault (None when it is not known)."""
        if self._argument is not None:
            return self._argument
        cause = self.__cause__ if self.__cause__ is not None else self.__context__
        return cause.argument if isinstance(cause, SettingError) else None

    def __reduce__(self) -> tuple[Any, ...]:  # to another process (Ray, multiprocessing)
        return type(self), (self.argument, str(self.args[0]) if self.args else "")


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
