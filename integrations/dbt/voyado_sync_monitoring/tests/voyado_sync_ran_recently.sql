{{ config(severity='warn') }}
-- Warns when no voyado-sync run finished successfully within voyado_sync_freshness_hours hours
-- (or none ever did): the schedule stopped, or every run fails before it ends.
select *
from {{ ref('voyado_sync_freshness') }}
where is_stale
