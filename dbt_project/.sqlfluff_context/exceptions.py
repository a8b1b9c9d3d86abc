"""dbt's ``exceptions`` for sqlfluff's Jinja templater (lint only): a compile-time
check renders as nothing, as it does in dbt when the check passes."""


def raise_compiler_error(message: str) -> str:
    return ""
