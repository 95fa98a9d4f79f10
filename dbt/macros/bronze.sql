{#- The bronze Delta tables, written by bronze_writer, seen from Spark. -#}

{#- Where a source table's Delta table lives: `meta.lake_path` if set, else bronze/<db>/<collection>. -#}
{% macro bronze_location(source_node) -%}
    {%- set relative = source_node.meta.get('lake_path') -%}
    {%- if relative is none -%}
        {%- set relative = 'bronze/' ~ lake_path_segment(var('mongo_database')) ~ '/' ~ lake_path_segment(source_node.identifier) -%}
    {%- endif -%}
    {{ return(lake_location(relative)) }}
{%- endmacro %}


{#- on-run-start: register every bronze table that exists as an external table of its schema.
    A table is only registered once bronze_writer has created it (a collection may have no
    events yet). The schema records the lake root it was registered for; when the root
    changes, its registrations are replaced (dropping an external table removes the catalog
    entry only, never the data). Four catalog queries when nothing changed. -#}
{% macro register_bronze_tables() %}
    {%- if execute -%}
        {%- set root = var('lake_root').rstrip('/') | replace("'", "\\'") -%}
        {%- set nodes = graph.sources.values() | selectattr('source_name', 'in', ['mongo', 'lakehouse']) | list -%}
        {#- Created only when missing: `create schema if not exists` on an existing schema makes the
            Hive metastore log an AlreadyExistsException with its stack trace at ERROR. -#}
        {%- set schemas = run_query('show schemas').columns[0].values() | map('lower') | list -%}
        {%- for schema in nodes | map(attribute='schema') | unique -%}
            {%- if schema | lower not in schemas -%}
                {%- do run_query("create schema " ~ schema ~ " with dbproperties ('lakehouse.lake_root' = '" ~ root ~ "')") -%}
            {%- endif -%}
            {%- set properties = run_query('describe schema extended ' ~ schema).rows
                | selectattr(0, 'equalto', 'Properties') | map(attribute=1) | join -%}
            {%- set registered = catalog_tables(schema) -%}
            {%- set schema_nodes = nodes | selectattr('schema', 'equalto', schema) | list -%}
            {%- if '(lakehouse.lake_root,' ~ var('lake_root').rstrip('/') ~ ')' not in properties -%}
                {{ log('lake root of schema ' ~ schema ~ ' changed (' ~ properties ~ '): registering its tables again', info=true) }}
                {%- for node in schema_nodes if node.identifier | lower in registered -%}
                    {%- do run_query('drop table ' ~ schema ~ '.' ~ node.identifier) -%}
                {%- endfor -%}
                {%- do run_query("alter schema " ~ schema ~ " set dbproperties ('lakehouse.lake_root' = '" ~ root ~ "')") -%}
                {%- set registered = [] -%}
            {%- endif -%}
            {%- set missing = schema_nodes | rejectattr('identifier', 'in', registered) | list -%}
            {%- for node in missing -%}
                {#- Spark SQL scripting: the exit handler ends the block quietly when no Delta table is there yet. -#}
                {%- call statement('register_' ~ node.identifier) -%}
                    begin
                        declare exit handler for sqlexception begin end;
                        select 1 from delta.`{{ bronze_location(node) }}` limit 0;
                        create table if not exists {{ schema }}.{{ node.identifier }} using delta location '{{ bronze_location(node) }}';
                    end
                {%- endcall -%}
            {%- endfor -%}
            {%- if missing -%}
                {%- set now_registered = catalog_tables(schema) -%}
                {%- for node in missing if node.identifier | lower not in now_registered -%}
                    {{ log('no bronze table at ' ~ bronze_location(node) ~ ' yet: ' ~ schema ~ '.' ~ node.identifier ~ ' reads as empty', info=true) }}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{% endmacro %}


{#- Table names of a schema, lower case, asked of the catalog. -#}
{% macro catalog_tables(schema) -%}
    {%- set tables = run_query('show tables in ' ~ schema) -%}
    {{ return(tables.columns['tableName'].values() | map('lower') | list) }}
{%- endmacro %}


{#- Asked of the catalog, not dbt's relation cache: the cache predates on-run-start's registrations. -#}
{% macro bronze_table_registered(schema, identifier) -%}
    {%- set found = run_query("show tables in " ~ schema ~ " like '" ~ identifier ~ "'") -%}
    {{ return(found.rows | length > 0) }}
{%- endmacro %}


{#- The envelope of an empty bronze table, for collections that have no bronze table yet. -#}
{% macro empty_bronze() -%}
    select
        cast(null as string) as __event_id,
        cast(null as string) as __operation,
        cast(null as string) as __document_key,
        cast(null as string) as __document_id,
        cast(null as timestamp) as __cluster_time,
        cast(null as bigint) as __cluster_time_increment,
        cast(null as timestamp) as __wall_time,
        cast(null as string) as __lsid,
        cast(null as bigint) as __txn_number,
        cast(null as timestamp) as __ingested_at,
        cast(null as string) as __full_document,
        cast(null as string) as __update_description,
        cast(null as string) as __rescued_data
    where false
{%- endmacro %}
