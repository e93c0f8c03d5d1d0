{#
  The ledger writes every timestamp as an ISO 8601 UTC string ("2026-03-01T08:15:00.123Z") so
  that its tables are the same on every warehouse. Turned into a timestamp without time zone,
  in UTC, with SQL every warehouse accepts: drop the "Z", put a space for the "T", cast.
#}
{% macro ledger_timestamp(column) -%}
  {{ return(adapter.dispatch('ledger_timestamp', 'voyado_sync_monitoring')(column)) }}
{%- endmacro %}

{% macro default__ledger_timestamp(column) -%}
  cast({{ dbt.replace(dbt.replace(column, "'T'", "' '"), "'Z'", "''") }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro bigquery__ledger_timestamp(column) -%}
  timestamp({{ column }})
{%- endmacro %}


{# Now, in UTC, comparable with ledger_timestamp(). #}
{% macro utc_now() -%}
  {{ return(adapter.dispatch('utc_now', 'voyado_sync_monitoring')()) }}
{%- endmacro %}

{% macro default__utc_now() -%}
  cast(current_timestamp at time zone 'UTC' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro snowflake__utc_now() -%}
  convert_timezone('UTC', current_timestamp())::timestamp_ntz
{%- endmacro %}

{% macro bigquery__utc_now() -%}
  current_timestamp()
{%- endmacro %}


{#
  One ledger table, or an empty result with the same columns while it does not exist yet
  (voyado-sync creates the ledger on its first run): a project's first `dbt build` must not fail
  because the sync has never run. `columns` maps each column to its type name (string, integer).
#}
{% macro ledger_table(name, columns) -%}
  {%- set src = source('voyado_sync', name) -%}
  {%- set found = src -%}
  {%- if execute -%}
    {%- set found = adapter.get_relation(
        database=src.database, schema=src.schema, identifier=src.identifier) -%}
  {%- endif -%}
  {%- if found is not none %}
    select {% for column in columns %}{{ adapter.quote(column) }}{{ ", " if not loop.last }}{% endfor %}
    from {{ src }}
  {%- else %}
    -- {{ src }} does not exist yet: voyado-sync creates it on its first run.
    select
    {%- for column, kind in columns.items() %}
      cast(null as {{ dbt.type_int() if kind == 'integer' else dbt.type_string() }}) as {{ adapter.quote(column) }}{{ "," if not loop.last }}
    {%- endfor %}
    where 1 = 0
  {%- endif %}
{%- endmacro %}
