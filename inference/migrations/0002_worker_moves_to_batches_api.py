"""Step 2 of 3 of moving Worker to batches_api (see batches_api 0003): inference keeps only EngineLoad."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("inference", "0001_initial"),
        ("batches_api", "0003_worker"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="engineload",
                    name="worker",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                            related_name="engine_loads", to="batches_api.worker"),
                ),
                migrations.DeleteModel(name="Worker"),
            ],
            database_operations=[],
        ),
    ]
