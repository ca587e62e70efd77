"""Database helpers the ORM lacks."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, models


def bulk_update_rows(model: type[models.Model], objs: Sequence[models.Model], fields: Sequence[str], *,
                     where: str = "", where_params: Sequence = (), using: str = "default",
                     batch_size: int = 1000) -> list:
    """Set different values on many rows in one statement per batch_size rows:
    WITH v(pk, f, …) AS (VALUES (…), …) UPDATE t SET f = v.f, … FROM v WHERE t.pk = v.pk [AND <where>]
    RETURNING t.pk. Returns the primary keys of the rows it changed.

    `where` makes the write conditional (a SQL condition on the table, aliased t: "t.status = %s"): a row
    whose state moved on meanwhile is left alone, and its key is not returned. Django's bulk_update builds a
    CASE WHEN expression per field and row in Python, which costs milliseconds per row, and cannot be
    conditional. Works on PostgreSQL and SQLite (3.35+).
    """
    if not objs:
        return []
    connection = connections[using]
    meta = model._meta
    pk = meta.pk
    columns = [pk] + [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    postgres = connection.vendor == "postgresql"

    def placeholder(field) -> str:
        # PostgreSQL types VALUES from the first row; NULLs need the column's type spelled out.
        return f"%s::{field.db_type(connection)}" if postgres else "%s"

    row_sql = "(" + ", ".join(placeholder(field) for field in columns) + ")"
    # The VALUES columns get names of their own: the table's names would be ambiguous in RETURNING.
    names = ", ".join(f"v{i}" for i in range(len(columns)))
    sets = ", ".join(f"{quote(field.column)} = v.v{i}" for i, field in enumerate(columns) if i)
    table = quote(meta.db_table)
    condition = f" AND ({where})" if where else ""
    changed: list = []
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            chunk = objs[start:start + batch_size]
            params = []
            for obj in chunk:
                for field in columns:
                    params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
            cursor.execute(
                f"WITH v({names}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "
                f"UPDATE {table} AS t SET {sets} FROM v WHERE t.{quote(pk.column)} = v.v0"
                f"{condition} RETURNING {quote(pk.column)}",
                [*params, *where_params],
            )
            changed.extend(row[0] for row in cursor.fetchall())
    return changed
