"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints `str(error)` on one line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class LatentADError(Exception):
    """Base of every error the CLI reports as one line."""


class DataError(LatentADError):
    """An input file or folder cannot be used (unreadable, empty, wrong size, wrong layout)."""


class ConfigError(LatentADError):
    """A method, preset or option is unknown or inconsistent."""


class ModelFileError(LatentADError):
    """A saved run or model folder is missing a file or holds something unexpected."""
