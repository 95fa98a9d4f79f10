{#- Revenue per day (UTC, by order placement), sales channel and product category. -#}
select
    order_date,
    sales_channel,
    category,
    count(distinct order_id) as orders,
    sum(quantity) as units,
    sum(line_revenue) as revenue
from {{ ref('int_order_items') }}
where is_revenue
group by order_date, sales_channel, category
