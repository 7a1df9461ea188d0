"""Optional packages, imported where a command needs them: a missing one is refused in one line that
says which extra brings it, instead of a traceback from deep inside a command.

    onnx = require("onnx", "export", "latentad export")   # or, around a block of imports:
    except ImportError as exc: raise missing_extra(exc, "serve", "latentad serve") from None
"""

from __future__ import annotations

import importlib
from types import ModuleType

from latentad.errors import MissingExtraError

EXTRAS = ("serve", "dask", "export", "openvino", "analysis", "data")


def install_line(extra: str) -> str:
    """The pip command that brings an extra."""
    return f'pip install "latentad[{extra}]"'


def missing_extra(exc: ImportError, extra: str, what: str | None = None) -> MissingExtraError:
    """The one-line error for an ImportError met while importing the packages of `extra`."""
    missing = getattr(exc, "name", None) or str(exc)
    need = f"{what} needs" if what else "this needs"
    return MissingExtraError(f"{need} the optional package {missing!r}, which is not installed: "
                             f"{install_line(extra)}")


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the extra that installs it.

    Any ImportError counts (also one from a dependency of `module`): either way the extra is not
    installed whole, and installing it is the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if not getattr(exc, "name", None):
            exc.name = module
        raise missing_extra(exc, extra, what) from None
