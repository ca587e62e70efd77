"""The Worker model moves from inference to batches_api (workers are the queue's consumers; inference builds on
batches_api, never the other way). Step 1 of 3: batches_api takes the model over in Django's state, on the same
table; inference 0002 drops it from its state; 0004 renames the table."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("batches_api", "0002_batch_retry_of"),
        ("inference", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Worker",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("name", models.CharField(max_length=200)),
                        ("hostname", models.CharField(max_length=255)),
                        ("pid", models.PositiveIntegerField()),
                        ("served_models", models.JSONField(default=list)),
                        ("loaded_model", models.CharField(blank=True, max_length=255, null=True)),
                        ("engine_pids", models.JSONField(default=list)),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_heartbeat_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("stopped_at", models.DateTimeField(blank=True, null=True)),
                        ("current_batches", models.JSONField(default=list)),
                        ("inflight", models.PositiveIntegerField(default=0)),
                        ("requests_done", models.BigIntegerField(default=0)),
                        ("output_tokens", models.BigIntegerField(default=0)),
                        ("tokens_per_second", models.FloatField(default=0.0)),
                    ],
                    options={
                        "ordering": ["-started_at"],
                        "db_table": "inference_worker",
                        "indexes": [models.Index(fields=["stopped_at", "last_heartbeat_at"],
                                                 name="inference_w_stopped_951749_idx")],
                    },
                ),
                migrations.AlterField(
                    model_name="batchrequest",
                    name="worker",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                            related_name="requests", to="batches_api.worker"),
                ),
            ],
            database_operations=[],
        ),
    ]
