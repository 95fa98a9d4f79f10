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


{#- A database or collection name as one path segment (lakehouse_common.lake.path_segment).
    Plain names (letters, digits, `.`, `_`, `-`) are their own segment. Any other name is
    escaped with a SHA-256 suffix, which Jinja cannot compute: give such a source its
    directory in `meta.lake_path` (bronze-writer's `status` shows it). -#}
{% macro lake_path_segment(name) -%}
    {%- if not modules.re.fullmatch('[A-Za-z0-9._-]+', name) -%}
        {{ exceptions.raise_compiler_error("'" ~ name ~ "' is not a plain name, so its bronze directory carries a hash suffix: set meta.lake_path on its source (e.g. bronze/<db>/" ~ modules.re.sub('[^A-Za-z0-9._-]', '_', name) ~ "-<hash>, as bronze-writer status lists it)") }}
    {%- endif -%}
    {{ return(name) }}
{%- endmacro %}


{#- A column name quoted for Spark SQL: any character, backticks doubled. -#}
{% macro quote_column(name) -%}
    {{ return('`' ~ name | replace('`', '``') ~ '`') }}
{%- endmacro %}
