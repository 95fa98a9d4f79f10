{#- Monthly cohorts by first revenue order: how many of each cohort buy again, and what they
    spend, N months later. -#}
with revenue_orders as (
    select customer_id, placed_at, revenue
    from {{ ref('int_orders') }}
    where is_revenue and customer_id is not null
),

first_orders as (
    select customer_id, cast(date_trunc('MONTH', min(placed_at)) as date) as cohort_month
    from revenue_orders
    group by customer_id
),

cohort_sizes as (
    select cohort_month, count(*) as cohort_size
    from first_orders
    group by cohort_month
),

activity as (
    select
        first_orders.cohort_month,
        (year(revenue_orders.placed_at) * 12 + month(revenue_orders.placed_at))
            - (year(first_orders.cohort_month) * 12 + month(first_orders.cohort_month)) as months_since_first_order,
        revenue_orders.customer_id,
        revenue_orders.revenue
    from revenue_orders
    inner join first_orders on revenue_orders.customer_id = first_orders.customer_id
)

select
    activity.cohort_month,
    activity.months_since_first_order,
    cohort_sizes.cohort_size,
    count(distinct activity.customer_id) as active_customers,
    sum(activity.revenue) as revenue,
    count(distinct activity.customer_id) / cohort_sizes.cohort_size as retention_rate
from activity
inner join cohort_sizes on activity.cohort_month = cohort_sizes.cohort_month
group by activity.cohort_month, activity.months_since_first_order, cohort_sizes.cohort_size
