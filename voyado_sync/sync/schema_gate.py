"""The schema gate: before a model sends anything, its interaction schema must exist in Voyado
exactly as the model declares it. A missing schema is created; one that differs stops only
that model (Voyado cannot update a schema in place)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voyado_sync.exceptions import ApiError, FatalApiError, RequestRefused
from voyado_sync.schemas import describe_drift
from voyado_sync.spec import InteractionModel
from voyado_sync.voyado import VoyadoClient


@dataclass(frozen=True)
class SchemaCheck:
    created: bool = False
    #: Why this model sends nothing this run; None: go ahead.
    error: str | None = None
    #: The jsonSchema Voyado holds (None: not read).
    stored: dict[str, Any] | None = None


async def check_schema(client: VoyadoClient, model: InteractionModel) -> SchemaCheck:
    """Create the model's schema when Voyado lacks it; refuse the model when it differs.

    Raises FatalApiError (401/403): no request of the run can succeed.
    """
    wanted = model.schema_body()
    try:
        existing = await client.get_schema(model.schema_id)
        if existing is None:
            await client.create_schema(wanted)
            return SchemaCheck(created=True, stored=wanted["jsonSchema"])
    except FatalApiError:
        raise
    except RequestRefused as exc:
        return SchemaCheck(error=f"could not create interaction schema {model.schema_id}: {exc}")
    except ApiError as exc:
        return SchemaCheck(
            error=f"could not check interaction schema {model.schema_id} in Voyado: {exc}"
        )
    drift = describe_drift(wanted, existing)
    if not drift:
        stored = existing.get("jsonSchema")
        return SchemaCheck(stored=stored if isinstance(stored, dict) else None)
    return SchemaCheck(
        error=(
            f"interaction schema {model.schema_id} in Voyado differs from the model's "
            f"meta.voyado, so nothing was sent for this model:\n"
            + "\n".join(f"    {line}" for line in drift)
            + "\n  Voyado cannot update a schema. Use a new schema_id (for example "
            f"{model.schema_id}-v2), or see `voyado-sync schemas diff`."
        )
    )
