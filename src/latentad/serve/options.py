"""`latentad serve`'s options checked before anything starts: where the token comes from, and that a
service reachable from the network is never started without one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from latentad.errors import ConfigError
from latentad.serve.guard import is_loopback


def serve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the flag or LATENTAD_TOKEN (`token`), or the first line of `token_file`."""
    if token_file is None:
        return token or None
    if token:
        raise ConfigError("--token-file: give the token one way only (--token / LATENTAD_TOKEN or --token-file)")
    try:
        lines = Path(token_file).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"--token-file {token_file}: the first line is empty")
    return secret


def validate_origins(origins: list[str]) -> None:
    """Each `--allow-origin` is scheme://host[:port], nothing else (a path would never match)."""
    for o in origins:
        parts = urlsplit(o)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"--allow-origin {o!r}: expected http(s)://host[:port]")


def validate_serve(host: str, port: int, token: str | None, limits: list[float]) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: must be in 1..65535")
    if any(v <= 0 for v in limits):
        raise ConfigError("--max-upload-mb, --max-request-mb, --max-pixels, --max-request-mpix, "
                          "--memory-budget-mb and --decode-cpu-s must be positive")
    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host}: serving off loopback needs a token (LATENTAD_TOKEN, --token-file "
                          "or --token): anyone who reaches the port could score and recalibrate")
