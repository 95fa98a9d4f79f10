{#- Fails for every value of the column that is no document's identity in ``to`` (a silver
    model): dbt's relationships test by the key the marts join on (values.sql), which every
    document has, whatever its _id type, where the `_id` column is null for an _id of another
    type than the column's. -#}
{% test references_document(model, column_name, to) %}
select child.{{ column_name }}
from {{ model }} as child
left anti join (select {{ document_identity() }} as identity from {{ to }}) as parent
    on child.{{ column_name }} = parent.identity
where child.{{ column_name }} is not null
{% endtest %}
