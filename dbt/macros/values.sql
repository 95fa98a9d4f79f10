{#- Values from relaxed Extended JSON text: the one place that decides when a rescued value fits a
    typed column, and what key a document identity has. A value bronze rescued (its type did not
    match its column: docs/bronze-schema.md) is in __rescued_data as {"type": <$type alias>,
    "value": <relaxed Extended JSON>}; Spark reads each value as its raw JSON text (a string's
    text without quotes). -#}

{#- The rescued entry of one field (struct<type, value>, null when the field was not rescued). -#}
{% macro rescued_entry(field, column='__rescued_data') -%}
    from_json({{ column }}, 'map<string,struct<type:string,value:string>>')['{{ field | replace("'", "\\'") }}']
{%- endmacro %}


{#- A JSON number's text, from a plain number or a Decimal128 ({"$numberDecimal": "..."}). -#}
{% macro number_text(text) -%}
    coalesce(from_json({{ text }}, 'struct<`$numberDecimal`:string>').`$numberDecimal`, {{ text }})
{%- endmacro %}


{#- A number as a key: MongoDB compares numbers by value across types, so 1, 1.0, NumberLong(1)
    and NumberDecimal("1.0") are one _id; all give "1". A fraction gives its double's text. -#}
{% macro canonical_number(number) -%}
    case
        when try_cast({{ number }} as decimal(38, 9)) = try_cast(try_cast({{ number }} as decimal(38, 9)) as bigint)
            then cast(try_cast(try_cast({{ number }} as decimal(38, 9)) as bigint) as string)
        else cast(try_cast({{ number }} as double) as string)
    end
{%- endmacro %}


{#- A rescued entry converted to ``type`` only where nothing is lost: an integral number into a
    bigint, a number whose double reads back as the same decimal into a double, and into a
    string the key form (ObjectId hex, canonical number, a string as it is). Anything else,
    a fraction into a bigint for one, stays null: the value is still in __rescued_data. -#}
{% macro lossless_rescued(entry, type) -%}
    {%- set number = number_text(entry ~ '.value') -%}
    {%- if type == 'bigint' -%}
    case when {{ entry }}.type in ('int', 'long', 'double', 'decimal')
        and try_cast({{ number }} as decimal(38, 9)) = try_cast(try_cast({{ number }} as decimal(38, 9)) as bigint)
        then try_cast(try_cast({{ number }} as decimal(38, 9)) as bigint) end
    {%- elif type == 'double' -%}
    case when {{ entry }}.type in ('int', 'long', 'double', 'decimal')
        and try_cast(cast(try_cast({{ number }} as double) as string) as decimal(38, 18)) = try_cast({{ number }} as decimal(38, 18))
        then try_cast({{ number }} as double) end
    {%- elif type == 'string' -%}
    case
        when {{ entry }}.type = 'string' then {{ entry }}.value
        when {{ entry }}.type = 'objectId' then from_json({{ entry }}.value, 'struct<`$oid`:string>').`$oid`
        when {{ entry }}.type in ('int', 'long', 'double', 'decimal') then {{ canonical_number(number) }}
    end
    {%- else -%}
    cast(null as {{ type }})
    {%- endif -%}
{%- endmacro %}


{#- A typed column as a key string: numbers in their canonical form, so ids that MongoDB holds
    equal join equal whatever numeric type each side stored. -#}
{% macro key_text(column, dtype) -%}
    {%- if dtype | lower in ('bigint', 'int', 'smallint', 'tinyint', 'double', 'float') or (dtype | lower).startswith('decimal') -%}
    {{ canonical_number(column) }}
    {%- else -%}
    cast({{ column }} as string)
    {%- endif -%}
{%- endmacro %}


{#- The document's identity as the marts key it: the _id of __document_id (compact relaxed
    Extended JSON) as ObjectId hex, canonical number or plain string. Unlike the `_id` column
    it exists for every document, whatever type each _id has. -#}
{% macro document_identity(column='__document_id') -%}
    coalesce(
        from_json({{ column }}, 'struct<`$oid`:string>').`$oid`,
        case when {{ column }} rlike '^-?[0-9]' or {{ column }} like '{"$numberDecimal"%'
            then {{ canonical_number(number_text(column)) }} end,
        from_json(concat('[', {{ column }}, ']'), 'array<string>')[0]
    )
{%- endmacro %}
