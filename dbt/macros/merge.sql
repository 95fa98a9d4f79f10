{#- dbt-spark's merge, plus three optional model configs it lacks:
      merge_update_condition  matched rows are updated only if this holds
      merge_delete_condition  matched rows for which this holds are deleted
      merge_insert_condition  unmatched rows are inserted only if this holds
    Silver's current state uses them to replace a row only with a later event, and to drop
    deleted documents in the same atomic MERGE that applies the other changes, so readers
    never see a tombstone. Without them the statement is the adapter's own: update the
    matched rows, insert the others. -#}
{% macro spark__get_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) %}
    {%- set predicates = [] if incremental_predicates is none else [] + incremental_predicates -%}
    {%- set update_columns = get_merge_update_columns(
        config.get('merge_update_columns'),
        config.get('merge_exclude_columns'),
        adapter.get_columns_in_relation(target),
    ) -%}
    {%- set keys = [] if unique_key is none else ([unique_key] if unique_key is string else unique_key) -%}
    {%- for key in keys -%}
        {%- do predicates.append('DBT_INTERNAL_SOURCE.' ~ key ~ ' = DBT_INTERNAL_DEST.' ~ key) -%}
    {%- endfor -%}
    {%- if not predicates -%}
        {%- do predicates.append('false') -%}
    {%- endif -%}
    {%- set delete_condition = config.get('merge_delete_condition') -%}
    {%- set insert_condition = config.get('merge_insert_condition') -%}
    {%- set update_condition = config.get('merge_update_condition') -%}

    {{ sql_header if sql_header is not none }}

    merge into {{ target }} as DBT_INTERNAL_DEST
    using {{ source }} as DBT_INTERNAL_SOURCE
    on {{ predicates | join(' and ') }}
    {%- if delete_condition %}
    when matched and ({{ delete_condition }}) then delete
    {%- endif %}
    when matched {%- if update_condition %} and ({{ update_condition }}){% endif %} then update set
    {%- if update_columns %}
        {%- for column in update_columns %}
        {{ column }} = DBT_INTERNAL_SOURCE.{{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    {%- else %} *
    {%- endif %}
    when not matched {%- if insert_condition %} and ({{ insert_condition }}){% endif %} then insert *
{% endmacro %}
