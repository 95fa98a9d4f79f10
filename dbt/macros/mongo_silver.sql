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
        '__document_bronze_version', '__history_version',
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
    {%- set start = processed_version('__bronze_version') + 1 if is_incremental() else 0 -%}
    {{ return({'start': start, 'latest': table_version(bronze)}) }}
{%- endmacro %}


{#- A Delta table's latest version (queried when the model compiles). -#}
{% macro table_version(relation) -%}
    {{ return(run_query('describe history ' ~ relation ~ ' limit 1').columns['version'].values()[0] | int) }}
{%- endmacro %}


{#- The last version of an input this model's rows came from, by the column that records it
    (-1: none yet, or a table from before that column, which then reads its input whole once). -#}
{% macro processed_version(column) -%}
    {%- set processed = none -%}
    {%- if column in adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
        {%- set processed = run_query('select max(' ~ column ~ ') from ' ~ this).columns[0].values()[0] -%}
    {%- endif -%}
    {{ return(-1 if processed is none else processed | int) }}
{%- endmacro %}


{#- Whether a table records its changes (delta.enableChangeDataFeed): history does from its
    creation; one created before that is switched on by its post-hook and read whole once. -#}
{% macro change_data_feed_enabled(relation) -%}
    {%- set properties = run_query('show tblproperties ' ~ relation) -%}
    {%- set enabled = [] -%}
    {%- for row in properties.rows if row[0] == 'delta.enableChangeDataFeed' and row[1] | lower == 'true' -%}
        {%- do enabled.append(true) -%}
    {%- endfor -%}
    {{ return(enabled | length > 0) }}
{%- endmacro %}


{#- History's post-hook: switch the change data feed on for a table created without it. -#}
{% macro enable_change_data_feed() -%}
    {%- if execute and not change_data_feed_enabled(this) -%}
    alter table {{ this }} set tblproperties ('delta.enableChangeDataFeed' = 'true')
    {%- else -%}
    select 1
    {%- endif -%}
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


{#- History also records its changes (the change data feed), which the current state reads. -#}
{% macro history_table_properties() -%}
    {%- set properties = silver_table_properties() -%}
    {%- do properties.update({'delta.enableChangeDataFeed': 'true'}) -%}
    {{ return(properties) }}
{%- endmacro %}


{#- Collection events with an absence position (docs/event-contract.md, *Snapshot-complete
    markers*): below it the collection has none of the documents whose every event sorts below
    it. A document whose last event is older is closed there by a version of its own, with the
    marker's operation (lakehouse_common.contract.absence_position is the same rule). -#}
{% macro absence_operations() -%}
    {{ return(['snapshotComplete', 'drop', 'rename', 'dropDatabase']) }}
{%- endmacro %}


{% macro absence_operation_list() -%}
    {%- for operation in absence_operations() -%}'{{ operation }}'{{ ', ' if not loop.last }}{%- endfor -%}
{%- endmacro %}


{#- The absence position of a bronze row of absence_operations(): a marker's id without its
    final `~` (a malformed marker id gives null: it closes nothing), or a drop's id and a dot. -#}
{% macro absence_position() -%}
    case
        when __operation = 'snapshotComplete' and __event_id rlike '^.+[.]z*[a-y][0-9]+[.]~$'
            then substring(__event_id, 1, length(__event_id) - 1)
        when __operation in ('drop', 'rename', 'dropDatabase') then __event_id || '.'
    end
{%- endmacro %}


{#- SCD type 2: one row per change event (deletes included, as tombstones), valid from the
    event's cluster time until the next event of the same document. Events are ordered by
    event id (the resume token; snapshot ids sort between the tokens around them), never
    by arrival, so late events slot into place: each run recomputes the timeline of the
    documents it touches and merges only rows that are new or whose validity changed. A
    document MongoDB lost without a delete event (a drop, a re-snapshot that did not find it)
    closes at the absence position with a version of its own (docs/silver_gold.md, *Deletes
    by absence*); one that no longer holds is deleted (marked `retracted` for the merge). -#}
{% macro mongo_history(bronze) %}
    {{ config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='__event_id',
        merge_update_columns=['__valid_to', '__is_current', '__processed_at'],
        merge_delete_condition="DBT_INTERNAL_SOURCE.__operation = 'retracted'",
        merge_insert_condition="DBT_INTERNAL_SOURCE.__operation <> 'retracted'",
        on_schema_change='append_new_columns',
        tblproperties=history_table_properties(),
        post_hook="{{ enable_change_data_feed() }}",
    ) }}
    {%- set bronze_exists = execute and bronze_table_registered(bronze.schema, bronze.identifier) -%}
    {%- set columns = document_columns(bronze) if bronze_exists else [] -%}
    {%- set carried = carried_columns(columns) -%}
    {%- set read_range = bronze_version_range(bronze) if bronze_exists else none -%}

with bronze_rows as (
    {% if bronze_exists -%}
    {{ bronze_commits(bronze, read_range) }}
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

{#- Every collection event with an absence position up to the version read (a handful: the
    whole bronze table's, since one closes documents whatever commit their events came in). -#}
markers as (
    select __event_id as __marker_id, __operation as __marker_operation, __cluster_time as __marker_time, __absence_position
    from (
        {%- if bronze_exists %}
        select distinct __event_id, __operation, __cluster_time, {{ absence_position() }} as __absence_position
        from {{ bronze }} version as of {{ read_range.latest }}
        where __operation in ({{ absence_operation_list() }})
        {%- else %}
        select cast(null as string) as __event_id, cast(null as string) as __operation,
            cast(null as timestamp) as __cluster_time, cast(null as string) as __absence_position
        where false
        {%- endif %}
    )
    where __absence_position is not null
),

{% if is_incremental() -%}
{#- The documents whose timeline this run recomputes: those with new events, and all of them
    when a collection event with an absence position is among the new commits. -#}
touched as (
    select distinct __document_id from events
    union
    select __document_id from {{ this }}
    where exists (select 1 from bronze_rows where __operation in ({{ absence_operation_list() }}))
),

{% endif -%}
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
        history.__operation,
        null, null, null, null, null, null, null, null, null, null
        {%- for column in columns %},
        null
        {%- endfor %}
    from {{ this }} as history
    left semi join touched on history.__document_id = touched.__document_id
    {%- endif %}
),

{#- An event history already has (a re-delivery landed in a later bronze commit) is not new:
    its existing version wins. -#}
recorded as (
    {%- if is_incremental() %}
    select * except (__copy) from (
        select *, row_number() over (partition by __document_id, __event_id order by __is_new) as __copy
        from timeline
    )
    where __copy = 1
    {%- else %}
    select * from timeline
    {%- endif %}
),

{#- The document's own events (not the versions absence closed it with). -#}
document_events as (
    select * from recorded where __operation not in ({{ absence_operation_list() }})
),

{#- Per document and collection event: the last event of the document below its absence
    position, and the document's last event of all. -#}
before_markers as (
    select
        document_events.__document_id,
        markers.__marker_operation,
        markers.__marker_time,
        markers.__absence_position,
        max_by(document_events.__event_id, case when document_events.__event_id < markers.__absence_position then document_events.__event_id end) as __before_event_id,
        max_by(document_events.__operation, case when document_events.__event_id < markers.__absence_position then document_events.__event_id end) as __before_operation,
        max(document_events.__event_id) as __last_event_id
    from document_events
    cross join markers
    group by 1, 2, 3, 4
),

{#- A document closes at an absence position when it still existed just below it, and, for a
    copy's marker, has no event above it (the copy did not contain it, and nothing since
    brought it back). Of the collection events after the same last event, the first closes
    it. Its version's id sorts right at the position (`!` below every character of an id). -#}
absences as (
    select
        __document_id,
        __absence_position || '!' || __document_id as __event_id,
        __marker_time as __valid_from,
        __marker_operation as __operation
    from (
        select
            *,
            row_number() over (partition by __document_id, __before_event_id order by __absence_position) as __first
        from before_markers
        where __before_event_id is not null
            and __before_operation <> 'delete'
            and (__marker_operation <> 'snapshotComplete' or __last_event_id < __absence_position)
    )
    where __first = 1
),

{#- The timeline to sequence: the document's events, its absence versions (as recorded when
    history has them already), and the recorded absence versions that no longer hold (an
    event of the copy that landed after its marker), which the merge deletes. -#}
versions as (
    select *, false as __retracted from document_events
    union all
    select
        coalesce(recorded.__document_id, absences.__document_id) as __document_id,
        coalesce(recorded.__event_id, absences.__event_id) as __event_id,
        coalesce(recorded.__valid_from, absences.__valid_from) as __valid_from,
        recorded.__event_id is null as __is_new,
        recorded.__old_valid_to,
        recorded.__old_is_current,
        coalesce(recorded.__operation, absences.__operation) as __operation,
        null, null, null, null, null, null, null, null, null, null
        {%- for column in columns %},
        null
        {%- endfor %},
        absences.__event_id is null as __retracted
    from (select * from recorded where __operation in ({{ absence_operation_list() }})) as recorded
    full outer join absences
        on recorded.__document_id = absences.__document_id and recorded.__event_id = absences.__event_id
),

sequenced as (
    select
        *,
        lead(__valid_from) over document_timeline as __valid_to,
        lead(__event_id) over document_timeline is null as __is_current
    from versions
    where not __retracted
    window document_timeline as (partition by __document_id order by __event_id)
    {%- if is_incremental() %}
    union all
    select *, __old_valid_to, __old_is_current from versions where __retracted
    {%- endif %}
),

changed as (
    select * from sequenced
    where __is_new
        or __retracted
        or not (__valid_to <=> __old_valid_to)
        or not (__is_current <=> __old_is_current)
)

select
    __document_id,
    __event_id,
    case when __retracted then 'retracted' else __operation end as __operation,
    __operation in ('delete', {{ absence_operation_list() }}) as __is_deleted,
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


{#- The current state: one row per document, merged from the history rows that changed since
    the last run (the history table's change data feed from the history version this model
    processed last, `__history_version`): a run reads the changed versions and the stored rows
    of the documents they touch, never the history of the others nor the whole history of
    these.

    Per touched document the window gives its current version (the history row that is
    current, when the run changed it) and its latest full image; the stored row fills in what
    the window does not bring. One MERGE applies it, guarded: a row is replaced only by a later
    event id, or by a later image (a late event with fullDocument behind an update without
    one). So an event arriving late never overrides a newer one, a version read twice changes
    nothing, and a deleted document never comes back (a late event is not the current version
    in history, so the window names no current version for it). Deletes are removed, or kept
    with __is_deleted when var('silver_deletes') is 'flag' (with the last known field values).

    An update without fullDocument (a change stream without updateLookup) cannot be turned
    into columns: the row keeps the last full image and says so in __has_unapplied_updates;
    __event_id is still the latest event's. -#}
{% macro mongo_current_state(history) %}
    {%- set deletes = var('silver_deletes') -%}
    {%- if deletes not in ('remove', 'flag') -%}
        {{ exceptions.raise_compiler_error("var silver_deletes must be 'remove' or 'flag', not '" ~ deletes ~ "'") }}
    {%- endif -%}
    {%- set newer = 'DBT_INTERNAL_SOURCE.__event_id > DBT_INTERNAL_DEST.__event_id' -%}
    {%- set newer_image = 'DBT_INTERNAL_SOURCE.__image_event_id > coalesce(DBT_INTERNAL_DEST.__image_event_id, \'\')' -%}
    {{ config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='__document_id',
        on_schema_change='append_new_columns',
        merge_update_condition=(newer ~ ' or ' ~ newer_image),
        merge_delete_condition=('DBT_INTERNAL_SOURCE.__is_deleted and ' ~ newer if deletes == 'remove' else none),
        merge_insert_condition=('not DBT_INTERNAL_SOURCE.__is_deleted' if deletes == 'remove' else none),
        tblproperties=silver_table_properties(),
    ) }}
    {%- set columns = document_columns(history) -%}
    {%- set carried = carried_columns(columns) -%}
    {%- set latest = table_version(history) if execute else 0 -%}
    {%- set start = processed_version('__history_version') + 1 if is_incremental() and change_data_feed_enabled(history) else 0 -%}
    {%- set stored_columns = document_columns(this) | map(attribute='name') | map('lower') | list if is_incremental() else [] -%}

{#- The history rows this run reads, each in its latest state (a row the window changed twice,
    inserted then closed, counts as closed). A full build, or a table from before
    __history_version, reads the history as of its latest version. #}
with changes as (
    {%- if start > latest %}
    select * from {{ history }} where false
    {%- elif start > 0 %}
    select * from (
        select
            *,
            row_number() over (partition by __event_id order by _commit_version desc, _change_type) as __copy
        from table_changes('{{ history }}', {{ start }}, {{ latest }})
        where _change_type in ('insert', 'update_postimage')
    )
    where __copy = 1
    {%- else %}
    select * from {{ history }} version as of {{ latest }}
    {%- endif %}
),

window_documents as (
    select
        __document_id,
        max(case when __is_current then named_struct(
            'event_id', __event_id,
            'operation', __operation,
            'is_deleted', __is_deleted,
            'valid_from', __valid_from,
            'ingested_at', __ingested_at,
            'bronze_version', __bronze_version
        ) end) as __latest,
        max(case when __has_full_document then __event_id end) as __image_event_id
    from changes
    group by __document_id
),

images as (
    select changes.*
    from changes
    inner join window_documents
        on changes.__document_id = window_documents.__document_id
        and changes.__event_id = window_documents.__image_event_id
),

{% if is_incremental() -%}
stored as (
    select * from {{ this }} as stored
    left semi join window_documents on stored.__document_id = window_documents.__document_id
),

{% endif -%}
documents as (
    select
        window_documents.__document_id,
        {#- The latest event: the window's current version, else (a run that changed only older
            versions) the stored row's. #}
        {%- for field, column in [('event_id', '__event_id'), ('operation', '__operation'), ('is_deleted', '__is_deleted'),
                                  ('valid_from', '__cluster_time'), ('ingested_at', '__ingested_at'),
                                  ('bronze_version', '__bronze_version')] %}
        {% if is_incremental() %}coalesce(window_documents.__latest.{{ field }}, stored.{{ column }}){% else %}window_documents.__latest.{{ field }}{% endif %} as {{ column }},
        {%- endfor %}
        {%- if is_incremental() %}
        window_documents.__image_event_id is not null
            and (stored.__image_event_id is null or window_documents.__image_event_id > stored.__image_event_id) as __image_from_window,
        {%- endif %}
        images.__event_id as __window_image_event_id,
        images.__full_document as __window_full_document,
        images.__rescued_data as __window_rescued_data
        {%- for column in columns %},
        images.{{ quote_column(column.name) }} as {{ quote_column('__window_' ~ column.name) }}
        {%- endfor %}
        {%- if is_incremental() %},
        stored.__image_event_id as __stored_image_event_id,
        stored.__full_document as __stored_full_document,
        stored.__rescued_data as __stored_rescued_data
        {%- for column in columns if column.name | lower in stored_columns %},
        stored.{{ quote_column(column.name) }} as {{ quote_column('__stored_' ~ column.name) }}
        {%- endfor %}
        {%- endif %}
    from window_documents
    left join images on window_documents.__document_id = images.__document_id
    {%- if is_incremental() %}
    left join stored on window_documents.__document_id = stored.__document_id
    {%- endif %}
)

select
    __document_id,
    __event_id,
    __operation,
    __is_deleted,
    not __is_deleted and not (__event_id <=> {{ image_choice('image_event_id', is_incremental()) }}) as __has_unapplied_updates,
    __cluster_time,
    __ingested_at,
    __bronze_version,
    cast({{ latest }} as bigint) as __history_version,
    {{ run_started_literal() }} as __processed_at,
    {{ image_choice('image_event_id', is_incremental()) }} as __image_event_id,
    {{ image_choice('full_document', is_incremental()) }} as __full_document,
    {{ image_choice('rescued_data', is_incremental()) }} as __rescued_data
    {%- for column in columns %},
    {{ image_choice(column.name, is_incremental() and column.name | lower in stored_columns) }} as {{ quote_column(column.name) }}
    {%- endfor %}
    {%- for expression in carried %},
    {{ expression }}
    {%- endfor %}
from documents
where __event_id is not null
{%- if deletes == 'remove' and not is_incremental() %}
    and not __is_deleted
{%- endif %}
{% endmacro %}


{#- A value of the current image: the window's when it brought a later image, else the stored row's. -#}
{% macro image_choice(name, stored) -%}
    {%- if stored -%}
    case when __image_from_window then {{ quote_column('__window_' ~ name) }} else {{ quote_column('__stored_' ~ name) }} end
    {%- else -%}
    {{ quote_column('__window_' ~ name) }}
    {%- endif -%}
{%- endmacro %}
