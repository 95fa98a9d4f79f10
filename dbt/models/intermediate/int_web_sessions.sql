{#- Web sessions with their traffic source, their campaign and how far down the funnel they
    went (GA-style events: page_view, view_item, add_to_cart, begin_checkout, purchase).

    The traffic source is GA's "source / medium" (`google / cpc` and `google / organic` are
    different traffic; direct is `(direct) / (none)`). Nothing keeps `utm_campaign` unique
    across campaigns, so each session resolves to one campaign: among the campaigns with its
    `utm_campaign`, the one that started last at or before the session (ties: the smaller id).
    A session before any such campaign started has none. -#}
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

campaigns as (
    select
        {{ document_fields(ref('stg_mongo__campaigns'), [
            ('_id', 'string'),
            ('utm_campaign', 'string'),
            ('start_date', 'timestamp'),
        ]) }}
    from {{ ref('stg_mongo__campaigns') }}
    where not __is_deleted
),

campaign_of_session as (
    select session_id, campaign_id
    from (
        select
            sessions._id as session_id,
            campaigns._id as campaign_id,
            row_number() over (
                partition by sessions._id order by campaigns.start_date desc, campaigns._id
            ) as preference
        from sessions
        inner join campaigns
            on sessions.utm_campaign = campaigns.utm_campaign
            and campaigns.start_date <= sessions.started_at
    )
    where preference = 1
),

parsed as (
    select *, from_json(events, 'array<struct<name:string>>') as funnel_events
    from sessions
)

select
    parsed._id as session_id,
    parsed.customer_id,
    parsed.started_at,
    to_date(parsed.started_at) as session_date,
    concat(coalesce(parsed.utm_source, '(direct)'), ' / ', coalesce(parsed.utm_medium, '(none)')) as traffic_source,
    parsed.utm_source,
    parsed.utm_medium,
    parsed.utm_campaign,
    campaign_of_session.campaign_id,
    parsed.device,
    coalesce(exists(parsed.funnel_events, event -> event.name = 'view_item'), false) as viewed_item,
    coalesce(exists(parsed.funnel_events, event -> event.name = 'add_to_cart'), false) as added_to_cart,
    coalesce(exists(parsed.funnel_events, event -> event.name = 'begin_checkout'), false) as began_checkout,
    coalesce(exists(parsed.funnel_events, event -> event.name = 'purchase'), false) as purchased,
    parsed.order_id
from parsed
left join campaign_of_session on parsed._id = campaign_of_session.session_id
