{#- Last-touch attribution, as GA's last non-direct click: each revenue order goes to the
    campaign of the customer's latest session with a utm_campaign that started at or before
    the order, within var('attribution_window_days'). Ties go to the greater session id. The
    campaign is the session's own (int_web_sessions resolves each to one), so a utm_campaign
    that two campaigns share never counts an order twice. -#}
with orders as (
    select order_id, customer_id, placed_at, revenue, is_first_order
    from {{ ref('int_orders') }}
    where is_revenue and customer_id is not null
),

touches as (
    select session_id, customer_id, started_at, utm_campaign, campaign_id
    from {{ ref('int_web_sessions') }}
    where utm_campaign is not null and customer_id is not null
),

ranked as (
    select
        orders.order_id,
        touches.session_id,
        touches.utm_campaign,
        touches.campaign_id,
        row_number() over (
            partition by orders.order_id order by touches.started_at desc, touches.session_id desc
        ) as recency
    from orders
    inner join touches
        on orders.customer_id = touches.customer_id
        and touches.started_at <= orders.placed_at
        and touches.started_at >= orders.placed_at - interval {{ var('attribution_window_days') | int }} days
)

select
    orders.order_id,
    orders.customer_id,
    orders.placed_at,
    orders.revenue,
    orders.is_first_order,
    ranked.session_id as attributed_session_id,
    ranked.utm_campaign,
    ranked.campaign_id
from orders
left join ranked on orders.order_id = ranked.order_id and ranked.recency = 1
