"""dbt's ``adapter`` for sqlfluff's Jinja templater (lint only): DuckDB's quoting."""


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
