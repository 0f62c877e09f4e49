"""Where crossroads finds the shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """``$CROSSROADS_DATA``, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("CROSSROADS_DATA", "../shared/data"))


def cache_dir() -> Path:
    """``$CROSSROADS_CACHE``, else ``~/.cache/crossroads``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crossroads"
    return Path(os.environ.get("CROSSROADS_CACHE", default))
