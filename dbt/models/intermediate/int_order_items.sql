{#- Order lines, exploded from the orders' embedded `items` array (relaxed Extended JSON in
    silver), with the product's category. A line's revenue is quantity x unit price minus its
    discount. -#}
with orders as (
    select
        {{ document_fields(ref('stg_mongo__orders'), [
            ('_id', 'string'),
            ('channel', 'string'),
            ('status', 'string'),
            ('placed_at', 'timestamp'),
            ('items', 'string'),
        ]) }}
    from {{ ref('stg_mongo__orders') }}
    where not __is_deleted
),

products as (
    select
        {{ document_fields(ref('stg_mongo__products'), [('_id', 'string'), ('category', 'string')]) }}
    from {{ ref('stg_mongo__products') }}
    where not __is_deleted
),

raw_lines as (
    select
        _id as order_id,
        channel,
        status,
        placed_at,
        posexplode(from_json(items, 'array<struct<sku:string,quantity:string,unit_price:string,discount:string>>'))
            as (line_index, raw_line)
    from orders
),

{#- Numbers inside `items` are relaxed Extended JSON: plain, or {"$numberDecimal": ...} for a
    Decimal128 price; each is read as text and then as a number. -#}
lines as (
    select
        order_id,
        channel,
        status,
        placed_at,
        line_index,
        named_struct(
            'sku', raw_line.sku,
            'quantity', try_cast({{ number_text('raw_line.quantity') }} as bigint),
            'unit_price', try_cast({{ number_text('raw_line.unit_price') }} as double),
            'discount', try_cast({{ number_text('raw_line.discount') }} as double)
        ) as line
    from raw_lines
)

select
    concat(lines.order_id, '-', lines.line_index + 1) as order_item_id,
    lines.order_id,
    lines.line_index + 1 as line_number,
    lines.line.sku as product_id,
    coalesce(products.category, 'unknown') as category,
    lines.line.quantity as quantity,
    lines.line.unit_price as unit_price,
    coalesce(lines.line.discount, 0) as discount,
    lines.line.quantity * lines.line.unit_price - coalesce(lines.line.discount, 0) as line_revenue,
    lines.status as order_status,
    lines.status in ('paid', 'shipped', 'delivered') as is_revenue,
    lines.channel as sales_channel,
    lines.placed_at,
    to_date(lines.placed_at) as order_date
from lines
left join products on lines.line.sku = products._id
