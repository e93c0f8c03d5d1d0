-- One row per day with runs: how many, how they ended, what they did and how long they took.
with runs as (
    select * from {{ ref('stg_voyado_sync__runs') }}
)

select
    cast({{ dbt.date_trunc('day', 'started_at') }} as date) as run_date,
    count(*) as runs,
    sum(case when is_successful then 1 else 0 end) as successful_runs,
    sum(case when is_clean then 1 else 0 end) as clean_runs,
    sum(case when status = 'failed' then 1 else 0 end) as failed_runs,
    sum(case when status = 'interrupted' then 1 else 0 end) as interrupted_runs,
    sum(case when status = 'running' then 1 else 0 end) as unfinished_runs,
    sum(rows_sent) as rows_sent,
    sum(rows_rejected) as rows_rejected,
    sum(rows_failed) as rows_failed,
    sum(duration_seconds) as total_duration_seconds,
    avg(duration_seconds) as avg_duration_seconds,
    max(duration_seconds) as max_duration_seconds,
    min(started_at) as first_started_at,
    max(finished_at) as last_finished_at
from runs
group by 1
