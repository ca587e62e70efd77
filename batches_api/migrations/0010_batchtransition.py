"""Each change of a batch's status is recorded with the batch object it produced, for GET /v1/batches/{id}/events."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("batches_api", "0009_result_seq"),
    ]

    operations = [
        migrations.CreateModel(
            name="BatchTransition",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("validating", "Validating"),
                            ("failed", "Failed"),
                            ("in_progress", "In Progress"),
                            ("finalizing", "Finalizing"),
                            ("completed", "Completed"),
                            ("expired", "Expired"),
                            ("cancelling", "Cancelling"),
                            ("cancelled", "Cancelled"),
                        ],
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("body", models.TextField()),
                (
                    "batch",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="transitions",
                        to="batches_api.batch",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["batch", "id"], name="batches_api_batch_i_3360c1_idx")],
            },
        ),
    ]
