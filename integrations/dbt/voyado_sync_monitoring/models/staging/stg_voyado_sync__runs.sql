with runs as (
    {{ voyado_sync_monitoring.ledger_table('runs', {
        'run_id': 'string', 'started_at': 'string', 'finished_at': 'string',
        'status': 'string', 'pid': 'integer', 'host': 'string', 'version': 'string',
        'models': 'string', 'selected': 'integer', 'already_sent': 'integer',
        'sent': 'integer', 'rejected': 'integer', 'failed': 'integer', 'message': 'string'
    }) }}
),

typed as (
    select
        run_id,
        {{ voyado_sync_monitoring.ledger_timestamp('started_at') }} as started_at,
        {{ voyado_sync_monitoring.ledger_timestamp('finished_at') }} as finished_at,
        status,
        version as voyado_sync_version,
        host,
        pid,
        models,
        coalesce(selected, 0) as rows_selected,
        coalesce(already_sent, 0) as rows_already_sent,
        coalesce(sent, 0) as rows_sent,
        coalesce(rejected, 0) as rows_rejected,
        coalesce(failed, 0) as rows_failed,
        nullif(message, '') as message
    from runs
)

select
    *,
    {{ dbt.datediff('started_at', 'finished_at', 'second') }} as duration_seconds,
    -- ok: it ran to the end (rows may have been rejected); failed: stopped by Voyado (401/403);
    -- interrupted: Ctrl-C or SIGTERM; running: in progress, or the process died.
    status = 'ok' as is_successful,
    status = 'ok' and rows_rejected = 0 and rows_failed = 0 as is_clean
from typed
