{#- Where things live in the lake, and how relations are named. -#}

{#- Custom schemas are used as given (silver, gold, bronze), not prefixed with the target schema:
    the lake has one silver and one gold, whoever runs dbt. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}


{% macro lake_location(relative_path) -%}
    {{ return(var('lake_root').rstrip('/') ~ '/' ~ relative_path) }}
{%- endmacro %}


{#- A database or collection name as one path segment (lakehouse_common.lake.path_segment). -#}
{% macro lake_path_segment(name) -%}
    {{ return(modules.re.sub('[^A-Za-z0-9._-]', '_', name)) }}
{%- endmacro %}


{#- A column name quoted for Spark SQL: any character, backticks doubled. -#}
{% macro quote_column(name) -%}
    {{ return('`' ~ name | replace('`', '``') ~ '`') }}
{%- endmacro %}
