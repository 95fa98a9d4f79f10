{#- Typed document fields for the marts: each named field cast to its type, or a typed null
    when silver has no such column (yet). Marts thereby build before a collection's first
    event and keep building when a field disappears. A value bronze rescued (its type did not
    match the column's) is taken where it converts to the mart's type without loss, so a
    field first seen as an integer keeps its later fractions. String fields are keys: numbers
    in them take their canonical form, and `_id` is the document's identity (values.sql). -#}
{% macro document_fields(relation, fields) -%}
    {%- set present = {} -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- do present.update({column.name | lower: column}) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set rescued = '__rescued_data' in present -%}
    {%- for name, type in fields -%}
        {%- set column = present.get(name | lower) -%}
        {%- if name == '_id' -%}
            {%- set typed = document_identity() -%}
        {%- elif column is none -%}
            {%- set typed = 'cast(null as ' ~ type ~ ')' -%}
        {%- elif type == 'string' -%}
            {%- set typed = key_text(quote_column(column.name), column.dtype) -%}
        {%- else -%}
            {%- set typed = 'cast(' ~ quote_column(column.name) ~ ' as ' ~ type ~ ')' -%}
        {%- endif -%}
        {%- if rescued and name != '_id' -%}
    coalesce({{ typed }}, {{ lossless_rescued(rescued_entry(name), type) }}) as {{ quote_column(name) }}
        {%- else -%}
    {{ typed }} as {{ quote_column(name) }}
        {%- endif -%}
        {{ ',' if not loop.last }}
    {% endfor -%}
{%- endmacro %}
