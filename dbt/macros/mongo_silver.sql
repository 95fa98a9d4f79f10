{#- Silver for one MongoDB collection: its SCD2 history and its current state.

    Both are generic: the document's top-level fields become columns by reading the bronze
    table's schema when the model compiles, so a field that appears in MongoDB appears in
    silver on the next run with nobody editing SQL (on_schema_change adds the column). A
    field that disappears keeps its column (bronze keeps it; if bronze itself lost it, the
    column is carried as typed nulls): columns are only ever added, so the build never fails
    the way sync_all_columns does. A value whose type conflicts with its column is null in
    the column and kept, with its BSON type, in __rescued_data; __full_document is the
    lossless document either way. -#}


{#- Columns bronze_writer writes around the document (docs/bronze-schema.md), and the ones
    silver adds: a document field is any other column. MongoDB fields may start with `__`
    too (Mongoose's `__v`), so the names are listed, not matched by prefix. -#}
{% macro envelope_column_names() -%}
    {{ return([
        '__event_id', '__resume_token', '__operation', '__db', '__collection', '__document_key',
        '__document_id', '__cluster_time', '__cluster_time_increment', '__wall_time', '__lsid',
        '__txn_number', '__kafka_topic', '__kafka_partition', '__kafka_offset', '__kafka_timestamp',
        '__ingested_at', '__full_document', '__update_description', '__full_document_before_change',
        '__rescued_data',
        '__is_deleted', '__has_full_document', '__valid_from', '__valid_to', '__is_current',
        '__has_unapplied_updates', '__image_event_id', '__processed_at', '__copy', '__recency', '__latest',
        '__document_bronze_version',
        '__bronze_version', '_change_type', '_commit_version', '_commit_timestamp',
    ]) }}
{%- endmacro %}


{#- Document columns of a relation. A field named like one of silver's own columns (any case)
    keeps no column of its own; it stays in __full_document. -#}
{% macro document_columns(relation) -%}
    {%- set columns = [] -%}
    {%- set reserved = envelope_column_names() -%}
    {%- if execute and relation is not none -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- if column.name | lower not in reserved -%}
                {%- do columns.append(column) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(columns) }}
{%- endmacro %}


{#- Document columns silver already has that the input no longer does, as typed nulls:
    the select always covers the target's columns, whatever happened upstream. -#}
{% macro carried_columns(input_columns) -%}
    {%- set carried = [] -%}
    {%- if is_incremental() -%}
        {%- set present = input_columns | map(attribute='name') | map('lower') | list -%}
        {%- for column in document_columns(this) -%}
            {%- if column.name | lower not in present -%}
                {%- do carried.append('cast(null as ' ~ column.dtype ~ ') as ' ~ quote_column(column.name)) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(carried) }}
{%- endmacro %}


{#- A document column as history stores it: bronze's value, or where bronze rescued a number
    that converts to the column's type without loss (3.0 into a long column, a Decimal128 that
    is an exact double), that number. A fraction in a long column stays null here and keeps
    its value in __rescued_data (and reaches the marts, which type it themselves). -#}
{% macro typed_document_column(column) -%}
    {%- set name = quote_column(column.name) -%}
    {%- if column.dtype | lower in ('bigint', 'double') -%}
    coalesce({{ name }}, {{ lossless_rescued(rescued_entry(column.name), column.dtype | lower) }}) as {{ name }}
    {%- else -%}
    {{ name }}
    {%- endif -%}
{%- endmacro %}


{#- The bronze commits a history run reads, as literals (queried when the model compiles): every
    commit after the last one this model processed (`max(__bronze_version)` of its rows, which
    the same MERGE writes), up to the table's version now. Delta versions become visible in
    order, so no commit is skipped however late it lands or whatever its ingestion time; a
    version read twice (its events were all known) is harmless, the merge is idempotent. -#}
{% macro bronze_version_range(bronze) -%}
    {%- set latest = run_query('describe history ' ~ bronze ~ ' limit 1').columns['version'].values()[0] | int -%}
    {%- set start = 0 -%}
    {%- if is_incremental() -%}
        {%- set start = processed_bronze_version() + 1 -%}
    {%- endif -%}
    {{ return({'start': start, 'latest': latest}) }}
{%- endmacro %}


{#- The last bronze version this model's rows came from (-1: none yet, or a table from before
    `__bronze_version`, which then re-reads bronze once). -#}
{% macro processed_bronze_version() -%}
    {%- set processed = none -%}
    {%- if '__bronze_version' in adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
        {%- set processed = run_query('select max(__bronze_version) from ' ~ this).columns[0].values()[0] -%}
    {%- endif -%}
    {{ return(-1 if processed is none else processed | int) }}
{%- endmacro %}


{#- The bronze rows of the commits in ``range`` with the version that wrote them. A full build
    reads the table as of its latest version; an incremental run reads only the new commits'
    rows through the change data feed (bronze is append-only: every row is an `insert`;
    OPTIMIZE's rewrites carry no data change and are not in the feed). -#}
{% macro bronze_commits(bronze, range) -%}
    {%- if not is_incremental() -%}
    select *, cast({{ range.latest }} as bigint) as __bronze_version from {{ bronze }} version as of {{ range.latest }}
    {%- elif range.start > range.latest -%}
    select *, cast(null as bigint) as __bronze_version from {{ bronze }} where false
    {%- else -%}
    select *, _commit_version as __bronze_version
    from table_changes('{{ bronze }}', {{ range.start }}, {{ range.latest }})
    where _change_type = 'insert'
    {%- endif -%}
{%- endmacro %}


{#- When this dbt invocation started, as a timestamp literal: silver stamps every row it writes
    with it (__processed_at), which is how tests find the rows the last run wrote. -#}
{% macro run_started_literal() -%}
    timestamp '{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}'
{%- endmacro %}


{#- Silver's incremental tables keep deletion vectors: a MERGE then marks the rows it replaces
    instead of rewriting every file that holds one, so an incremental run writes about as much
    as it changes. Spark, deltalake and Polars read them; `spark-jobs maintain` (OPTIMIZE)
    purges them. -#}
{% macro silver_table_properties() -%}
    {{ return({'delta.enableDeletionVectors': 'true'}) }}
{%- endmacro %}


{#- SCD type 2: one row per change event (deletes included, as tombstones), valid from the
    event's cluster time until the next event of the same document. Events are ordered by
    event id (the resume token; snapshot ids sort between the tokens around them), never
    by arrival, so late events slot into place: each run recomputes the timeline of the
    documents it touches and merges only rows that are new or whose validity changed. -#}
{% macro mongo_history(bronze) %}
    {{ config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='__event_id',
        merge_update_columns=['__valid_to', '__is_current', '__processed_at'],
        on_schema_change='append_new_columns',
        tblproperties=silver_table_properties(),
    ) }}
    {%- set bronze_exists = execute and bronze_table_registered(bronze.schema, bronze.identifier) -%}
    {%- set columns = document_columns(bronze) if bronze_exists else [] -%}
    {%- set carried = carried_columns(columns) -%}

with bronze_rows as (
    {% if bronze_exists -%}
    {{ bronze_commits(bronze, bronze_version_range(bronze)) }}
    {%- else -%}
    select *, cast(null as bigint) as __bronze_version from ({{ empty_bronze() }})
    {%- endif %}
),

batch as (
    select
        __event_id,
        __document_id,
        __document_key,
        __operation,
        __cluster_time,
        __cluster_time_increment,
        __wall_time,
        __lsid,
        __txn_number,
        __ingested_at,
        __full_document,
        __update_description,
        __rescued_data,
        __bronze_version,
        row_number() over (partition by __event_id order by __ingested_at) as __copy
        {%- for column in columns %},
        {{ quote_column(column.name) }}
        {%- endfor %}
    from bronze_rows
    where __operation in ('insert', 'update', 'replace', 'delete', 'snapshot')
        and __document_id is not null
),

{#- The same event landed twice (a replay, a retry) counts once. -#}
events as (
    select * from batch where __copy = 1
),

{#- The timeline of every document this run touches: its new events, which carry their
    payload, and (incremental) the versions history already has, key columns only. History
    is scanned once and nothing joins back to bronze for the payload. -#}
timeline as (
    select
        __document_id,
        __event_id,
        __cluster_time as __valid_from,
        true as __is_new,
        cast(null as timestamp) as __old_valid_to,
        cast(null as boolean) as __old_is_current,
        __operation,
        __cluster_time_increment,
        __wall_time,
        __lsid,
        __txn_number,
        __ingested_at,
        __document_key,
        __full_document,
        __update_description,
        __rescued_data,
        __bronze_version
        {%- for column in columns %},
        {{ quote_column(column.name) }}
        {%- endfor %}
    from events
    {%- if is_incremental() %}
    union all
    select
        history.__document_id,
        history.__event_id,
        history.__valid_from,
        false,
        history.__valid_to,
        history.__is_current,
        null, null, null, null, null, null, null, null, null, null, null
        {%- for column in columns %},
        null
        {%- endfor %}
    from {{ this }} as history
    left semi join events on history.__document_id = events.__document_id
    {%- endif %}
),

{#- An event history already has (a re-delivery landed in a later bronze commit) is not new:
    its existing version wins. -#}
versions as (
    {%- if is_incremental() %}
    select * from (
        select *, row_number() over (partition by __document_id, __event_id order by __is_new) as __copy
        from timeline
    )
    where __copy = 1
    {%- else %}
    select * from timeline
    {%- endif %}
),

sequenced as (
    select
        *,
        lead(__valid_from) over document_events as __valid_to,
        lead(__event_id) over document_events is null as __is_current
    from versions
    window document_events as (partition by __document_id order by __event_id)
),

changed as (
    select * from sequenced
    where __is_new
        or not (__valid_to <=> __old_valid_to)
        or not (__is_current <=> __old_is_current)
)

select
    __document_id,
    __event_id,
    __operation,
    __operation = 'delete' as __is_deleted,
    __full_document is not null as __has_full_document,
    __valid_from,
    __valid_to,
    __is_current,
    __cluster_time_increment,
    __wall_time,
    __lsid,
    __txn_number,
    __ingested_at,
    {{ run_started_literal() }} as __processed_at,
    __document_key,
    __full_document,
    __update_description,
    __rescued_data,
    __bronze_version
    {%- for column in columns %},
    {{ typed_document_column(column) }}
    {%- endfor %}
    {%- for expression in carried %},
    {{ expression }}
    {%- endfor %}
from changed

{% endmacro %}


{#- The current state: one row per document, from its latest event in the history. An
    incremental run recomputes only documents with events ingested since the last run,
    from their whole history, so an event arriving late never overrides a newer one and a
    deleted document never comes back. Deletes are removed, or kept with __is_deleted when
    var('silver_deletes') is 'flag' (with the last known field values).

    An update without fullDocument (a change stream without updateLookup) cannot be turned
    into columns: the row keeps the last full image and says so in __has_unapplied_updates;
    __event_id is still the latest event's. -#}
{% macro mongo_current_state(history) %}
    {%- set deletes = var('silver_deletes') -%}
    {%- if deletes not in ('remove', 'flag') -%}
        {{ exceptions.raise_compiler_error("var silver_deletes must be 'remove' or 'flag', not '" ~ deletes ~ "'") }}
    {%- endif -%}
    {{ config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='__document_id',
        on_schema_change='append_new_columns',
        merge_delete_condition=('DBT_INTERNAL_SOURCE.__is_deleted' if deletes == 'remove' else none),
        merge_insert_condition=('not DBT_INTERNAL_SOURCE.__is_deleted' if deletes == 'remove' else none),
        tblproperties=silver_table_properties(),
    ) }}
    {%- set columns = document_columns(history) -%}
    {%- set carried = carried_columns(columns) -%}

with
{% if is_incremental() -%}
touched as (
    select distinct __document_id from {{ history }}
    where __bronze_version > {{ processed_bronze_version() }}
),

{% endif -%}
candidates as (
    select * from {{ history }} as history
    {%- if is_incremental() %}
    left semi join touched on history.__document_id = touched.__document_id
    {%- endif %}
    where history.__is_current or history.__has_full_document
),

{#- One pass over the candidates: every row carries its document's latest version, and the
    document's latest full image ranks first. A document without one keeps its latest row,
    whose document columns are null as bronze's are without fullDocument (selected as they
    are, so they keep bronze's field metadata). -#}
ranked as (
    select
        *,
        max(case when __is_current then named_struct(
            'event_id', __event_id,
            'operation', __operation,
            'is_deleted', __is_deleted,
            'has_full_document', __has_full_document,
            'valid_from', __valid_from,
            'ingested_at', __ingested_at
        ) end) over (partition by __document_id) as __latest,
        max(__bronze_version) over (partition by __document_id) as __document_bronze_version,
        row_number() over (partition by __document_id order by __has_full_document desc, __event_id desc) as __recency
    from candidates
)

select
    __document_id,
    __latest.event_id as __event_id,
    __latest.operation as __operation,
    __latest.is_deleted as __is_deleted,
    not __latest.is_deleted and not __latest.has_full_document as __has_unapplied_updates,
    __latest.valid_from as __cluster_time,
    __latest.ingested_at as __ingested_at,
    __document_bronze_version as __bronze_version,
    {{ run_started_literal() }} as __processed_at,
    case when __has_full_document then __event_id end as __image_event_id,
    case when __has_full_document then __full_document end as __full_document,
    case when __has_full_document then __rescued_data end as __rescued_data
    {%- for column in columns %},
    {{ quote_column(column.name) }}
    {%- endfor %}
    {%- for expression in carried %},
    {{ expression }}
    {%- endfor %}
from ranked
where __recency = 1
    and __latest is not null
{%- if deletes == 'remove' and not is_incremental() %}
    and not __latest.is_deleted
{%- endif %}
{% endmacro %}
