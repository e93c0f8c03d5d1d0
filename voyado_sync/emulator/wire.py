"""What an emulated endpoint answers, before it becomes HTTP bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    """A status, a JSON body (``None``: no body) and extra headers."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(status: int, code: str, message: str, **extra: Any) -> Reply:
    """An error in the one shape the emulator uses: ``{"errorCode", "message", ...}``."""
    return Reply(status, {"errorCode": code, "message": message, **extra})
