"""Step 3 of 3 of moving Worker (its table is renamed), the claim of a batch's task-cluster job, and the request
status "completed" renamed "responded" (it holds 4xx responses too; "completed" in a batch's counts means 2xx)."""

from django.db import migrations, models


def rename_status(apps, schema_editor, old="completed", new="responded"):
    apps.get_model("batches_api", "BatchRequest").objects.filter(status=old).update(status=new)


def unrename_status(apps, schema_editor):
    rename_status(apps, schema_editor, old="responded", new="completed")


class Migration(migrations.Migration):

    dependencies = [
        ("batches_api", "0003_worker"),
        ("inference", "0002_worker_moves_to_batches_api"),
    ]

    operations = [
        migrations.AlterModelTable(name="worker", table=None),
        migrations.AddField(model_name="batch", name="job_owner",
                            field=models.CharField(blank=True, max_length=64, null=True)),
        migrations.AddField(model_name="batch", name="job_heartbeat_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="batch", name="job_enqueued_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AlterField(
            model_name="batchrequest",
            name="status",
            field=models.CharField(choices=[("pending", "Pending"), ("running", "Running"),
                                            ("responded", "Responded"), ("errored", "Errored")],
                                   default="pending", max_length=16),
        ),
        migrations.RunPython(rename_status, unrename_status),
    ]
