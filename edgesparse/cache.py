"""The per-user cache of measurements (`edgesparse tune`, `edgesparse calibrate`): where it lives and how a
file in it is written (whole or not at all, so that a crash never leaves a half-written cache)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """`$EDGESPARSE_CACHE`, else `~/.cache/edgesparse`."""
    root = os.environ.get("EDGESPARSE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "edgesparse"


def write_json_atomic(path: Path, data: dict) -> Path:
    """Writes ``data`` as indented JSON to a temporary file beside ``path`` and renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
