-- One row per product review = one `productReview` interaction in Voyado.
--
-- Deliberately bad rows (the demo shows them rejected, with reasons):
--   R-20012  customer 1040 has no contact_id        -> NULL contact, rejected
--   R-20041  two different reviews share this id     -> duplicate unique_key, both rows rejected
--   R-20030  rating is NULL                          -> breaks the required property `rating`, rejected
-- The left join keeps reviews whose customer has no Voyado contact, so the sync can report them.
with reviews as (
    select * from {{ ref('product_reviews') }}
),

customers as (
    select customer_id, contact_id from {{ ref('customers') }}
)

select
    reviews.review_id,
    customers.contact_id,
    reviews.customer_id,
    reviews.sku,
    reviews.rating,
    reviews.review_title,
    reviews.verified_purchase,
    reviews.reviewed_at
from reviews
left join customers on customers.customer_id = reviews.customer_id
