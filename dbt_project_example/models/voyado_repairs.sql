-- One row per registered repair = one `repair` interaction (Voyado's own repair example schema).
--
-- Deliberately bad row:
--   REP-4121  customer 1040 has no contact_id -> NULL contact, rejected
with repairs as (
    select * from {{ ref('repairs') }}
),

customers as (
    select customer_id, contact_id from {{ ref('customers') }}
)

select
    repairs.repair_id,
    customers.contact_id,
    repairs.customer_id,
    repairs.registered_at,
    repairs.product_model,
    repairs.brand,
    repairs.product_id,
    repairs.store_name,
    repairs.store_id,
    repairs.is_free_repair,
    repairs.cost
from repairs
left join customers on customers.customer_id = repairs.customer_id
