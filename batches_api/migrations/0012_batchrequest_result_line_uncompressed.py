"""BatchRequest.result_line is stored without compression on PostgreSQL (STORAGE EXTERNAL: a long line still goes
out of line, uncompressed). PostgreSQL compresses a text value over about 2 kB with pglz by default, and an
embedding's result line (384 floats as JSON text, about 8 kB) is such a value: writing 6,000 of them cost the
database 3.6 s of CPU with pglz against 0.5 s uncompressed (0.26 against 0.07 s to read them back), for 40% more
disk (float text compresses poorly; the lines stay with their batch, for GET /v1/batches/{id}/results). Chat lines
are mostly shorter than 2 kB and were never compressed. SQLite never compresses: nothing to do there."""

from django.db import migrations

TABLE_COLUMN = '"batches_api_batchrequest" ALTER COLUMN "result_line"'


def storage(value: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE {TABLE_COLUMN} SET STORAGE {value}")

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("batches_api", "0011_batchrequest_batch_no_own_index"),
    ]

    operations = [
        migrations.RunPython(storage("EXTERNAL"), storage("EXTENDED"), elidable=False),
    ]
