{#- Every current customer with lifetime value and cohort (the month of the first revenue order). -#}
with customers as (
    select
        {{ document_fields(ref('stg_mongo__customers'), [
            ('_id', 'string'),
            ('customer_number', 'string'),
            ('email', 'string'),
            ('country', 'string'),
            ('segment', 'string'),
            ('loyalty_tier', 'string'),
            ('created_at', 'timestamp'),
        ]) }}
    from {{ ref('stg_mongo__customers') }}
    where not __is_deleted
),

order_totals as (
    select
        customer_id,
        count(*) as orders,
        sum(revenue) as lifetime_value,
        min(placed_at) as first_order_at,
        max(placed_at) as last_order_at
    from {{ ref('int_orders') }}
    where is_revenue
    group by customer_id
)

select
    customers._id as customer_id,
    customers.customer_number,
    customers.email,
    customers.country,
    customers.segment,
    customers.loyalty_tier,
    customers.created_at as signed_up_at,
    coalesce(order_totals.orders, 0) as orders,
    coalesce(order_totals.lifetime_value, 0) as lifetime_value,
    order_totals.lifetime_value / order_totals.orders as average_order_value,
    order_totals.first_order_at,
    order_totals.last_order_at,
    cast(date_trunc('MONTH', order_totals.first_order_at) as date) as cohort_month
from customers
left join order_totals on customers._id = order_totals.customer_id
