{#- Every current product: units, orders and revenue from revenue orders, and how much of
    what sold came back (refunds) or never went out (cancellations). -#}
with products as (
    select
        {{ document_fields(ref('stg_mongo__products'), [
            ('_id', 'string'),
            ('name', 'string'),
            ('category', 'string'),
            ('brand', 'string'),
            ('price', 'double'),
            ('active', 'boolean'),
        ]) }}
    from {{ ref('stg_mongo__products') }}
    where not __is_deleted
),

sales as (
    select
        product_id,
        sum(case when is_revenue then quantity else 0 end) as units_sold,
        count(distinct case when is_revenue then order_id end) as orders,
        sum(case when is_revenue then line_revenue else 0 end) as revenue,
        sum(case when order_status = 'refunded' then quantity else 0 end) as refunded_units,
        sum(case when order_status = 'cancelled' then quantity else 0 end) as cancelled_units
    from {{ ref('int_order_items') }}
    group by product_id
)

select
    products._id as product_id,
    products.name as product_name,
    products.category,
    products.brand,
    products.price,
    products.active as is_active,
    coalesce(sales.units_sold, 0) as units_sold,
    coalesce(sales.orders, 0) as orders,
    coalesce(sales.revenue, 0) as revenue,
    coalesce(sales.refunded_units, 0) as refunded_units,
    coalesce(sales.cancelled_units, 0) as cancelled_units,
    sales.refunded_units / nullif(sales.units_sold + sales.refunded_units, 0) as refund_rate
from products
left join sales on products._id = sales.product_id
