"""voyado-sync: send dbt-declared Voyado Engage interactions, exactly once, at Voyado's pace.

The Python API for orchestrators is :func:`run` and :func:`validate` (see
:mod:`voyado_sync.api`); they are imported on first use, so ``import voyado_sync`` and
``voyado-sync --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voyado_sync.exceptions import (
    ApiError,
    ConfigError,
    FatalApiError,
    LockError,
    ManifestError,
    RetryableApiError,
    RowRejected,
    SchemaRefused,
    StateError,
    VoyadoSyncError,
    WarehouseError,
)

if TYPE_CHECKING:
    from voyado_sync.api import RunResult, ValidationResult, run, validate

__version__ = "0.1.0"

_API = ("RunResult", "ValidationResult", "run", "validate")

__all__ = [
    "ApiError",
    "ConfigError",
    "FatalApiError",
    "LockError",
    "ManifestError",
    "RetryableApiError",
    "RowRejected",
    "RunResult",
    "SchemaRefused",
    "StateError",
    "ValidationResult",
    "VoyadoSyncError",
    "WarehouseError",
    "__version__",
    "run",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from voyado_sync import api

        # Importing api imports the submodule voyado_sync.validate, which sets this package's
        # attribute ``validate`` to that module: put the API's functions in place over it.
        globals().update({n: getattr(api, n) for n in _API})
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
