{#- Last-touch attribution, as GA's last non-direct click: each revenue order goes to the
    campaign of the customer's latest session with a utm_campaign that started at or before
    the order, within var('attribution_window_days'). Ties go to the greater session id. -#}
with orders as (
    select order_id, customer_id, placed_at, revenue, is_first_order
    from {{ ref('int_orders') }}
    where is_revenue and customer_id is not null
),

touches as (
    select session_id, customer_id, started_at, utm_campaign
    from {{ ref('int_web_sessions') }}
    where utm_campaign is not null and customer_id is not null
),

ranked as (
    select
        orders.order_id,
        touches.session_id,
        touches.utm_campaign,
        row_number() over (
            partition by orders.order_id order by touches.started_at desc, touches.session_id desc
        ) as recency
    from orders
    inner join touches
        on orders.customer_id = touches.customer_id
        and touches.started_at <= orders.placed_at
        and touches.started_at >= orders.placed_at - interval {{ var('attribution_window_days') | int }} days
),

campaigns as (
    select
        {{ document_fields(ref('stg_mongo__campaigns'), [('_id', 'string'), ('utm_campaign', 'string')]) }}
    from {{ ref('stg_mongo__campaigns') }}
    where not __is_deleted
)

select
    orders.order_id,
    orders.customer_id,
    orders.placed_at,
    orders.revenue,
    orders.is_first_order,
    ranked.session_id as attributed_session_id,
    ranked.utm_campaign,
    campaigns._id as campaign_id
from orders
left join ranked on orders.order_id = ranked.order_id and ranked.recency = 1
left join campaigns on ranked.utm_campaign = campaigns.utm_campaign
