with deliveries as (
    {{ voyado_sync_monitoring.ledger_table('deliveries', {
        'model': 'string', 'schema_id': 'string', 'row_key': 'string',
        'row_key_display': 'string', 'status': 'string', 'interaction_id': 'string',
        'contact_id': 'string', 'created_date': 'string', 'http_status': 'integer',
        'error_code': 'string', 'reason': 'string', 'run_id': 'string',
        'first_seen_at': 'string', 'updated_at': 'string'
    }) }}
)

-- The request body the ledger keeps while a row is in flight is left out: it can be large, and
-- it is voyado-sync's to reconcile, not a metric.
select
    model,
    schema_id,
    row_key,
    row_key_display,
    status,
    interaction_id,
    contact_id,
    created_date,
    http_status,
    error_code,
    reason,
    -- The reason without its values ("rating: 7 is greater than 5" -> "rating"), the grouping the
    -- run summary and the alerts use.
    trim({{ dbt.split_part('reason', "':'", 1) }}) as cause,
    run_id as last_run_id,
    {{ voyado_sync_monitoring.ledger_timestamp('first_seen_at') }} as first_seen_at,
    {{ voyado_sync_monitoring.ledger_timestamp('updated_at') }} as updated_at
from deliveries
