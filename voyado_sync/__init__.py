"""voyado-sync: send dbt-declared Voyado Engage interactions, exactly once, at Voyado's pace."""

from __future__ import annotations

from voyado_sync.exceptions import (
    ApiError,
    ConfigError,
    FatalApiError,
    LockError,
    ManifestError,
    RetryableApiError,
    RowRejected,
    StateError,
    VoyadoSyncError,
    WarehouseError,
)

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "ConfigError",
    "FatalApiError",
    "LockError",
    "ManifestError",
    "RetryableApiError",
    "RowRejected",
    "StateError",
    "VoyadoSyncError",
    "WarehouseError",
    "__version__",
]
