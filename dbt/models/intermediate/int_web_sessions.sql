{#- Web sessions with their traffic source and how far down the funnel they went (GA-style
    events: page_view, view_item, add_to_cart, begin_checkout, purchase). -#}
with sessions as (
    select
        {{ document_fields(ref('stg_mongo__web_sessions'), [
            ('_id', 'string'),
            ('customer_id', 'string'),
            ('started_at', 'timestamp'),
            ('utm_source', 'string'),
            ('utm_medium', 'string'),
            ('utm_campaign', 'string'),
            ('device', 'string'),
            ('events', 'string'),
            ('order_id', 'string'),
        ]) }}
    from {{ ref('stg_mongo__web_sessions') }}
    where not __is_deleted
),

parsed as (
    select *, from_json(events, 'array<struct<name:string>>') as funnel_events
    from sessions
)

select
    _id as session_id,
    customer_id,
    started_at,
    to_date(started_at) as session_date,
    coalesce(utm_source, '(direct)') as traffic_source,
    utm_medium,
    utm_campaign,
    device,
    coalesce(exists(funnel_events, event -> event.name = 'view_item'), false) as viewed_item,
    coalesce(exists(funnel_events, event -> event.name = 'add_to_cart'), false) as added_to_cart,
    coalesce(exists(funnel_events, event -> event.name = 'begin_checkout'), false) as began_checkout,
    coalesce(exists(funnel_events, event -> event.name = 'purchase'), false) as purchased,
    order_id
from parsed
