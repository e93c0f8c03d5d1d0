"""The optional ``--state-file``: a JSON snapshot so that a local demo survives a restart."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from voyado_sync.emulator.state import Emulator


def load_state(emulator: Emulator, path: Path) -> bool:
    """Restore ``emulator`` from ``path`` if the file exists; return whether it did.

    Raises ValueError naming the file when it exists but cannot be used: starting empty would
    silently lose the demo's data, and overwrite it on the next save.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    try:
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        emulator.restore(data)
    except ValueError as e:
        raise ValueError(f"cannot read emulator state file {path}: {e}") from e
    return True


def write_state(data: dict[str, Any], path: Path) -> None:
    """Write a snapshot atomically: a crash mid-write leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
