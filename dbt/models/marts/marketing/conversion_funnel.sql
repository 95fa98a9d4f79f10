{#- The web funnel per day and traffic source: sessions reaching each step, and the share
    that purchased. -#}
select
    session_date,
    traffic_source,
    count(*) as sessions,
    count_if(viewed_item) as viewed_item,
    count_if(added_to_cart) as added_to_cart,
    count_if(began_checkout) as began_checkout,
    count_if(purchased) as purchased,
    count_if(purchased) / count(*) as conversion_rate
from {{ ref('int_web_sessions') }}
group by session_date, traffic_source
