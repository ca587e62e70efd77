"""BatchRequest.batch loses its own index (and PostgreSQL's text-pattern one): the (batch, line) and (batch,
status, line) indexes serve every lookup by batch. Only the indexes are dropped; the foreign key stays as it is
(Django's own AlterField would drop and re-add it, checking every row of the table again)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("batches_api", "0010_batchtransition"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="batchrequest",
                    name="batch",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="requests",
                        to="batches_api.batch",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=[
                        'DROP INDEX IF EXISTS "batches_api_batchrequest_batch_id_6de5436f"',
                        'DROP INDEX IF EXISTS "batches_api_batchrequest_batch_id_6de5436f_like"',
                    ],
                    reverse_sql=[
                        'CREATE INDEX IF NOT EXISTS "batches_api_batchrequest_batch_id_6de5436f" '
                        'ON "batches_api_batchrequest" ("batch_id")',
                    ],
                ),
            ],
        ),
    ]
