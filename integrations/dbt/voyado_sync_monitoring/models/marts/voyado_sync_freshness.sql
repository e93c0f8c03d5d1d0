-- One row: when a run last finished successfully, and whether that is longer ago than the var
-- voyado_sync_freshness_hours (the test voyado_sync_ran_recently warns when it is).
with runs as (
    select * from {{ ref('stg_voyado_sync__runs') }}
),

last_success as (
    select max(finished_at) as last_success_at from runs where is_successful
),

last_run as (
    select max(started_at) as last_started_at from runs
),

facts as (
    select
        last_success.last_success_at,
        last_run.last_started_at,
        (select min(status) from runs where runs.started_at = last_run.last_started_at)
            as last_status,
        cast({{ dbt.datediff('last_success.last_success_at', voyado_sync_monitoring.utc_now(), 'second') }}
            as {{ dbt.type_float() }}) / 3600 as hours_since_last_success
    from last_success
    cross join last_run
)

select
    last_success_at,
    hours_since_last_success,
    last_started_at,
    last_status,
    {{ var('voyado_sync_freshness_hours', 26) }} as freshness_hours,
    coalesce(hours_since_last_success > {{ var('voyado_sync_freshness_hours', 26) }}, true)
        as is_stale
from facts
