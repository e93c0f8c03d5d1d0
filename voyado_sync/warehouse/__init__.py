"""Warehouse access: a Protocol and the dbt-adapter backend (DuckDB, Postgres, ...)."""

from __future__ import annotations

from voyado_sync.warehouse.base import Warehouse

__all__ = ["Warehouse"]
