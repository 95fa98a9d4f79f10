{#- Every order, with its revenue and its last-touch campaign. -#}
select
    orders.order_id,
    orders.order_number,
    orders.customer_id,
    orders.session_id,
    orders.sales_channel,
    orders.status,
    orders.is_revenue,
    orders.placed_at,
    orders.order_date,
    orders.line_count,
    orders.units,
    orders.order_value,
    orders.revenue,
    orders.shipping_fee,
    orders.is_first_order,
    attribution.campaign_id as attributed_campaign_id,
    attribution.attributed_session_id
from {{ ref('int_orders') }} as orders
left join {{ ref('int_order_attribution') }} as attribution on orders.order_id = attribution.order_id
