from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("batches_api", "0012_batchrequest_result_line_uncompressed"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="loading_model",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.AddField(
            model_name="worker",
            name="loading_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
