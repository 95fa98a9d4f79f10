{#- Every campaign: what it cost, the traffic it brought, the orders and new customers
    attributed to it (last touch), ROAS (attributed revenue / spend), CAC (spend / new
    customers) and its social engagement (likes, comments and shares; a missing count is 0).
    Sessions count by the campaign each resolved to (int_web_sessions), not by utm_campaign,
    which campaigns may share. -#}
with campaigns as (
    select
        {{ document_fields(ref('stg_mongo__campaigns'), [
            ('_id', 'string'),
            ('name', 'string'),
            ('channel', 'string'),
            ('utm_campaign', 'string'),
            ('status', 'string'),
            ('start_date', 'timestamp'),
            ('end_date', 'timestamp'),
        ]) }}
    from {{ ref('stg_mongo__campaigns') }}
    where not __is_deleted
),

ad_spend as (
    select
        {{ document_fields(ref('stg_mongo__ad_spend'), [
            ('campaign_id', 'string'),
            ('spend', 'double'),
            ('impressions', 'bigint'),
            ('clicks', 'bigint'),
        ]) }}
    from {{ ref('stg_mongo__ad_spend') }}
    where not __is_deleted
),

spend as (
    select campaign_id, sum(spend) as spend, sum(impressions) as impressions, sum(clicks) as clicks
    from ad_spend
    group by campaign_id
),

sessions as (
    select campaign_id, count(*) as sessions
    from {{ ref('int_web_sessions') }}
    where campaign_id is not null
    group by campaign_id
),

attributed as (
    select
        campaign_id,
        count(*) as conversions,
        count_if(is_first_order) as new_customers,
        sum(revenue) as attributed_revenue
    from {{ ref('int_order_attribution') }}
    where campaign_id is not null
    group by campaign_id
),

posts as (
    select
        {{ document_fields(ref('stg_mongo__social_engagement'), [
            ('campaign_id', 'string'),
            ('likes', 'bigint'),
            ('comments', 'bigint'),
            ('shares', 'bigint'),
        ]) }}
    from {{ ref('stg_mongo__social_engagement') }}
    where not __is_deleted
),

social as (
    select campaign_id, count(*) as social_posts, sum(coalesce(likes, 0) + coalesce(comments, 0) + coalesce(shares, 0)) as social_engagements
    from posts
    where campaign_id is not null
    group by campaign_id
)

select
    campaigns._id as campaign_id,
    campaigns.name as campaign_name,
    campaigns.channel,
    campaigns.utm_campaign,
    campaigns.status,
    to_date(campaigns.start_date) as start_date,
    to_date(campaigns.end_date) as end_date,
    coalesce(spend.spend, 0) as spend,
    coalesce(spend.impressions, 0) as impressions,
    coalesce(spend.clicks, 0) as clicks,
    coalesce(sessions.sessions, 0) as sessions,
    coalesce(attributed.conversions, 0) as conversions,
    coalesce(attributed.new_customers, 0) as new_customers,
    coalesce(attributed.attributed_revenue, 0) as attributed_revenue,
    attributed.attributed_revenue / nullif(spend.spend, 0) as roas,
    spend.spend / nullif(attributed.new_customers, 0) as cac,
    coalesce(social.social_posts, 0) as social_posts,
    coalesce(social.social_engagements, 0) as social_engagements
from campaigns
left join spend on campaigns._id = spend.campaign_id
left join sessions on campaigns._id = sessions.campaign_id
left join attributed on campaigns._id = attributed.campaign_id
left join social on campaigns._id = social.campaign_id
