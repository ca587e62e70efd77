"""Database helpers the ORM lacks."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, models


def bulk_update_rows(model: type[models.Model], objs: Sequence[models.Model], fields: Sequence[str], *,
                     using: str = "default", batch_size: int = 1000) -> None:
    """Set different values on many rows in one statement per batch_size rows:
    WITH v(pk, f, …) AS (VALUES (…), …) UPDATE t SET f = v.f, … FROM v WHERE t.pk = v.pk.

    Django's bulk_update builds a CASE WHEN expression per field and row in Python, which costs milliseconds
    per row; this is the same write for a fraction of that. Works on PostgreSQL and SQLite (3.33+).
    """
    if not objs:
        return
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
    names = ", ".join(quote(field.column) for field in columns)
    sets = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in columns[1:])
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            chunk = objs[start:start + batch_size]
            params = []
            for obj in chunk:
                for field in columns:
                    params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
            cursor.execute(
                f"WITH v({names}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "
                f"UPDATE {table} SET {sets} FROM v WHERE {table}.{quote(pk.column)} = v.{quote(pk.column)}",
                params,
            )
