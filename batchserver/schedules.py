"""The periodic jobs of the task cluster, installed by `manage.py bootstrap` (idempotent)."""

from __future__ import annotations

from django.conf import settings

SCHEDULES = {
    # name: (function, minutes between runs)
    "batches: finish cancelled, expired and stuck batches": ("batches_api.tasks.sweep", 1),
    "files: delete expired files and uploads": ("files_api.tasks.delete_expired_files", 10),
}


def install_schedules() -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1,
                      "cluster": settings.TASKS_CLUSTER},
        )
