-- Rows waiting for their contact to exist in Voyado, and for how long. voyado-sync looks them up
-- again on every run for the model's contact.not_found_retry_days (default 7), then rejects them.
with deliveries as (
    select * from {{ ref('stg_voyado_sync__deliveries') }}
    where status = 'contact_not_found'
)

select
    model,
    schema_id,
    row_key,
    row_key_display,
    reason,
    last_run_id,
    first_seen_at,
    updated_at as last_tried_at,
    cast({{ dbt.datediff('first_seen_at', voyado_sync_monitoring.utc_now(), 'second') }} as {{ dbt.type_float() }})
        / 3600 as hours_waiting
from deliveries
