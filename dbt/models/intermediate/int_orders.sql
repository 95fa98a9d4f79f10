{#- One row per order with its typed fields, value, revenue and place in the customer's
    history. An order's value is the sum of its lines (before shipping); its revenue is that
    value when it is paid, shipped or delivered, and 0 when it is placed, cancelled or
    refunded. -#}
with orders as (
    select
        {{ document_fields(ref('stg_mongo__orders'), [
            ('_id', 'string'),
            ('order_number', 'string'),
            ('customer_id', 'string'),
            ('session_id', 'string'),
            ('channel', 'string'),
            ('status', 'string'),
            ('placed_at', 'timestamp'),
            ('shipping_fee', 'double'),
        ]) }}
    from {{ ref('stg_mongo__orders') }}
    where not __is_deleted
),

lines as (
    select
        order_id,
        count(*) as line_count,
        sum(quantity) as units,
        sum(line_revenue) as order_value
    from {{ ref('int_order_items') }}
    group by order_id
),

revenue_orders as (
    select
        _id as order_id,
        row_number() over (partition by customer_id order by placed_at, _id) as customer_order_number
    from orders
    where status in ('paid', 'shipped', 'delivered') and customer_id is not null
)

select
    orders._id as order_id,
    orders.order_number,
    orders.customer_id,
    orders.session_id,
    orders.channel as sales_channel,
    orders.status,
    orders.status in ('paid', 'shipped', 'delivered') as is_revenue,
    orders.placed_at,
    to_date(orders.placed_at) as order_date,
    coalesce(lines.line_count, 0) as line_count,
    coalesce(lines.units, 0) as units,
    coalesce(lines.order_value, 0) as order_value,
    case when orders.status in ('paid', 'shipped', 'delivered') then coalesce(lines.order_value, 0) else 0 end as revenue,
    orders.shipping_fee,
    revenue_orders.customer_order_number,
    coalesce(revenue_orders.customer_order_number = 1, false) as is_first_order
from orders
left join lines on orders._id = lines.order_id
left join revenue_orders on orders._id = revenue_orders.order_id
