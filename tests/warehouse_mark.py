"""A hand-made warehouse that lacks the marts a test is about is still a warehouse:
`polypythias report` refuses a database holding none of the marts it draws and no
`dim_checkpoints` (every build writes one), so such tests add an empty one."""

from pathlib import Path

import duckdb


def mark_as_warehouse(db: Path) -> Path:
    """Add an empty ``dim_checkpoints`` to the database file ``db``; returns ``db``."""
    with duckdb.connect(str(db)) as con:
        con.execute("create table if not exists dim_checkpoints (step bigint, is_present boolean)")
    return db
