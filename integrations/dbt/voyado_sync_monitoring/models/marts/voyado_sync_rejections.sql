-- Rows that are rejected (sent again only when their content changes, or with
-- --retry-rejected) or failed (sent again on the next run), by model and cause.
with deliveries as (
    select * from {{ ref('stg_voyado_sync__deliveries') }}
    where status in ('rejected', 'failed')
)

select
    model,
    schema_id,
    status,
    cause,
    error_code,
    http_status,
    count(*) as row_count,
    min(reason) as example_reason,
    min(first_seen_at) as first_seen_at,
    max(updated_at) as last_updated_at
from deliveries
group by model, schema_id, status, cause, error_code, http_status
