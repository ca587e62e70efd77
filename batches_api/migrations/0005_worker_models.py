"""A worker keeps several models loaded at once, and says when the ones it preloads are ready."""

from django.db import migrations, models


def to_list(apps, schema_editor):
    Worker = apps.get_model("batches_api", "Worker")
    for worker in Worker.objects.exclude(loaded_model__isnull=True).exclude(loaded_model=""):
        Worker.objects.filter(pk=worker.pk).update(loaded_models=[worker.loaded_model])


class Migration(migrations.Migration):

    dependencies = [
        ("batches_api", "0004_lifecycle"),
    ]

    operations = [
        migrations.AddField(model_name="worker", name="loaded_models", field=models.JSONField(default=list)),
        migrations.AddField(model_name="worker", name="ready_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(to_list, migrations.RunPython.noop),
        migrations.RemoveField(model_name="worker", name="loaded_model"),
    ]
