"""The project's exceptions: each one is a user-facing sentence and an exit code.

The CLI turns any `NncliError` into its message on stderr and `exit_code`; anything else is a
programming error and keeps its traceback (shown in full with `--debug`).
"""

from __future__ import annotations


class NncliError(Exception):
    """A mistake the user can fix; the message is one clear sentence."""

    exit_code = 1


class ConfigError(NncliError):
    """A wrong configuration value.

    `key` is the path of the offending value relative to the object that raised it (a layer's
    argument name, say); code that knows the enclosing YAML path and file prefixes it with
    `at()`, so the final message reads `configs/x.yaml:9 model[2].linear.units: <message>`.
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None, location: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.location = location

    def at(self, prefix: str | None = None, location: str | None = None) -> ConfigError:
        """A copy with `prefix` put in front of the key and `location` (file:line) set."""
        key = self.key
        if prefix:
            key = prefix if not key else (f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}")
        return ConfigError(self.message, key, location or self.location)

    def __str__(self) -> str:
        head = " ".join(part for part in (self.location, f"{self.key}:" if self.key else None) if part)
        return f"{head} {self.message}" if head else self.message


class DataError(NncliError):
    """A dataset that cannot be found, fetched or parsed."""


class CheckpointError(NncliError):
    """A checkpoint that is missing, corrupt, hostile or of an unknown format."""


class WriteError(NncliError):
    """A file that could not be written (a full disk, a read-only folder); the message names it."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
