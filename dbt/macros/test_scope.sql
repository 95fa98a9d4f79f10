{#- Which rows of silver a data test checks.

    Silver's tables are merged incrementally, and every row a run writes (new, or changed
    by the merge) carries that run's start time in __processed_at. Silver's tests check the
    rows the last run wrote, not the whole table: what an incremental build tests then grows
    with the change, not with the lake. That is sound for the tests silver has:

    - row-level tests (not_null, expression_is_true) can only fail on rows that were
      written, and each row was checked by the run that wrote it;
    - unique on the merge key: the MERGE matches on that key, so a new row can never repeat
      a key already in the table; only the rows of one run could repeat one another;
    - one current version per document (history): checked over every version of the
      documents the last run touched, untouched versions included.

    The placeholders below are written in a test's `where` config (dbt_project.yml sets
    the first for every silver test) and replaced when the test runs:

    - __written_by_last_run__        rows the last run wrote
    - __documents_of_last_run__      all rows of the documents the last run wrote

    `--vars '{silver_tests: all}'` (or a full refresh, which rewrites every row) tests whole
    tables, as a periodic audit. -#}
{% macro spark__get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and ('__written_by_last_run__' in where or '__documents_of_last_run__' in where) -%}
        {%- set last_run = last_run_condition(relation) -%}
        {%- set where = where
            | replace('__written_by_last_run__', last_run)
            | replace('__documents_of_last_run__',
                'true' if last_run == 'true'
                else '__document_id in (select __document_id from ' ~ relation ~ ' where ' ~ last_run ~ ')') -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}


{#- `__processed_at >= <the last run's start>`, as a literal so Delta skips older files; `true`
    when every row is to be tested. In a `dbt build` that built the tested models, the last
    run is this one and its start is known; otherwise (`dbt test`) the table is asked. -#}
{% macro last_run_condition(relation) -%}
    {%- set scope = var('silver_tests') -%}
    {%- if scope not in ('last_run', 'all') -%}
        {{ exceptions.raise_compiler_error("var silver_tests must be 'last_run' or 'all', not '" ~ scope ~ "'") }}
    {%- endif -%}
    {%- if scope == 'all' or not execute -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set parents = [] -%}
    {%- for node in model.depends_on.nodes if node.startswith('model.') -%}
        {%- do parents.append(node) -%}
    {%- endfor -%}
    {%- if flags.WHICH == 'build' and parents and parents | reject('in', selected_resources) | list | length == 0 -%}
        {{ return('__processed_at >= ' ~ run_started_literal()) }}
    {%- endif -%}
    {%- set last = run_query('select cast(max(__processed_at) as string) from ' ~ relation).columns[0].values()[0] -%}
    {{ return("__processed_at >= timestamp '" ~ last ~ "'" if last else 'true') }}
{%- endmacro %}
