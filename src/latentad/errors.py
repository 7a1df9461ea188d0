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


class MissingExtraError(ConfigError):
    """An optional package is not installed; the message names the `pip install "latentad[EXTRA]"` that brings it."""


class WeightsError(DataError):
    """A built-in backbone's weight file is not the one this version was built for (its sha256 differs)."""


class OverTime(LatentADError):
    """Work ran past the deadline set around it (`progress.deadline`): a search stops a candidate
    that would overrun its time budget."""
