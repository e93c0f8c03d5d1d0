-- One row per active subscription plan = one `activeSubscription` interaction.
-- The contact is found by email (GET /api/v3/contacts/id?email=...), not by contactId, and
-- there is no created_date mapping: Voyado stamps the interaction with the time it arrives.
-- A plan change keeps the subscription_id (SUB-9003), hence the composite key (subscription_id, plan).
-- A mirror model (meta.voyado.mode: mirror): a subscription that ends leaves this model, and
-- voyado-sync deletes its interaction. The var `ended_subscriptions` ends some for the demo:
--   dbt build -s voyado_active_subscriptions --vars '{ended_subscriptions: [SUB-9001]}'
--
-- Deliberately bad row:
--   SUB-9029 / Klubb Plus  customer 1040 (tove.ek@icloud.com) is not a Voyado contact
--                          -> the email lookup answers 404 ContactNotFound
with subscriptions as (
    select * from {{ ref('subscriptions') }}
),

customers as (
    select customer_id, email from {{ ref('customers') }}
)

select
    subscriptions.subscription_id,
    subscriptions.plan,
    -- emails were typed at the till with mixed case; normalise before the lookup
    lower(trim(customers.email)) as email,
    subscriptions.customer_id,
    subscriptions.monthly_price,
    subscriptions.started_at
from subscriptions
left join customers on customers.customer_id = subscriptions.customer_id
where subscriptions.status = 'active'
{%- set ended = var('ended_subscriptions', []) %}
{%- if ended %}
  and subscriptions.subscription_id not in (
    {%- for id in ended %}'{{ id }}'{{ ', ' if not loop.last }}{% endfor -%}
  )
{%- endif %}
