{#- Fails for every row where the expression is false (null counts as true: use not_null for that). -#}
{% test expression_is_true(model, expression) %}
select * from {{ model }} where not ({{ expression }})
{% endtest %}
