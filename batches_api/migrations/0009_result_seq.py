"""Each result line gets its place in its batch's completion order (result_seq), for GET /v1/batches/{id}/results.
Lines recorded before are numbered in the order they finished."""

from django.db import migrations, models


def number_recorded_lines(apps, schema_editor):
    BatchRequest = apps.get_model("batches_api", "BatchRequest")
    Batch = apps.get_model("batches_api", "Batch")
    quote = schema_editor.connection.ops.quote_name
    requests, batches = quote(BatchRequest._meta.db_table), quote(Batch._meta.db_table)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {requests} SET result_seq = numbered.n FROM (SELECT id, ROW_NUMBER() OVER "
            f"(PARTITION BY batch_id ORDER BY finished_at, id) AS n FROM {requests} WHERE result_line IS NOT NULL) "
            f"AS numbered WHERE {requests}.id = numbered.id"
        )
        cursor.execute(
            f"UPDATE {batches} SET last_result_seq = numbered.n FROM (SELECT batch_id, MAX(result_seq) AS n FROM "
            f"{requests} WHERE result_seq IS NOT NULL GROUP BY batch_id) AS numbered WHERE {batches}.id = "
            "numbered.batch_id"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("batches_api", "0008_usage_day"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="last_result_seq",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="batchrequest",
            name="result_seq",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(number_recorded_lines, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="batchrequest",
            constraint=models.UniqueConstraint(
                condition=models.Q(("result_seq__isnull", False)),
                fields=("batch", "result_seq"),
                name="batch_request_result_seq_unique",
            ),
        ),
    ]
