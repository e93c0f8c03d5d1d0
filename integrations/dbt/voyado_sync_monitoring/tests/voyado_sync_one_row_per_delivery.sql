-- The ledger holds one row per (model, schema_id, row key): more would mean a damaged ledger.
select model, schema_id, row_key, count(*) as copies
from {{ ref('stg_voyado_sync__deliveries') }}
group by model, schema_id, row_key
having count(*) > 1
