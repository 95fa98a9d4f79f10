{#- Typed document fields for the marts: each named field cast to its type, or a typed null
    when silver has no such column (yet). Marts thereby build before a collection's first
    event and keep building when a field disappears. -#}
{% macro document_fields(relation, fields) -%}
    {%- set present = [] -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- do present.append(column.name | lower) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- for name, type in fields -%}
        {%- if name | lower in present -%}
    cast({{ quote_column(name) }} as {{ type }}) as {{ quote_column(name) }}
        {%- else -%}
    cast(null as {{ type }}) as {{ quote_column(name) }}
        {%- endif -%}
        {{ ',' if not loop.last }}
    {% endfor -%}
{%- endmacro %}
