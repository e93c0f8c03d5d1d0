"""Run the voyado-sync CLI with every statement sent to the warehouse appended to a file.

    python tests/warehouse/record_statements.py LOG voyado-sync-arguments...

Each line of LOG is a JSON object: {"sql": ...} for a statement, {"columns": relation,
"names": [...]} for a column lookup's answer. Used by the Snowflake test, whose runs happen
in their own virtual environment (so they cannot be patched from the test process).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    from voyado_sync.cli import main as cli
    from voyado_sync.warehouse.adapter import DbtWarehouse

    log = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115 - open for the process's life

    def note(entry: dict[str, Any]) -> None:
        log.write(json.dumps(entry) + "\n")

    query, many, columns = DbtWarehouse.query, DbtWarehouse.execute_many, DbtWarehouse.columns

    def recorded_query(self: DbtWarehouse, sql: str) -> Any:
        note({"sql": sql})
        return query(self, sql)

    def recorded_many(self: DbtWarehouse, statements: Any) -> None:
        for sql in statements:
            note({"sql": sql})
        many(self, statements)

    def recorded_columns(self: DbtWarehouse, relation: Any) -> Any:
        found = columns(self, relation)
        note({"columns": relation.rendered, "names": list(found or ())})
        return found

    DbtWarehouse.query = recorded_query  # type: ignore[method-assign]
    DbtWarehouse.execute_many = recorded_many  # type: ignore[method-assign]
    DbtWarehouse.columns = recorded_columns  # type: ignore[method-assign]
    sys.argv = ["voyado-sync", *sys.argv[2:]]
    cli()


if __name__ == "__main__":
    main()
