-- Not synced (no config.meta.voyado): an ordinary model that voyado-sync must ignore.
with customers as (
    select * from {{ ref('customers') }}
),

reviews as (
    select customer_id, count(*) as review_count, avg(rating) as avg_rating
    from {{ ref('product_reviews') }}
    group by customer_id
),

repairs as (
    select customer_id, count(*) as repair_count, sum(cost) as repair_spend
    from {{ ref('repairs') }}
    group by customer_id
),

subscriptions as (
    select customer_id, count(*) as active_subscription_count
    from {{ ref('subscriptions') }}
    where status = 'active'
    group by customer_id
)

select
    customers.customer_id,
    customers.contact_id,
    customers.first_name,
    customers.country,
    customers.contact_id is not null as is_voyado_contact,
    coalesce(reviews.review_count, 0) as review_count,
    reviews.avg_rating,
    coalesce(repairs.repair_count, 0) as repair_count,
    coalesce(repairs.repair_spend, 0) as repair_spend,
    coalesce(subscriptions.active_subscription_count, 0) as active_subscription_count
from customers
left join reviews on reviews.customer_id = customers.customer_id
left join repairs on repairs.customer_id = customers.customer_id
left join subscriptions on subscriptions.customer_id = customers.customer_id
