"""The periodic jobs of the task cluster, installed by `manage.py bootstrap` (idempotent). The sweep for lost
work is not one of them: `manage.py runtasks` runs it every few seconds (django-q2 schedules run at most once
a minute)."""

from __future__ import annotations

from django.conf import settings

SCHEDULES = {
    # name: (function, minutes between runs)
    "files: delete expired files and uploads": ("files_api.tasks.delete_expired_files", 10),
}
OUR_PACKAGES = ("batchserver.", "batches_api.", "files_api.", "inference.")


def install_schedules() -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
                "cluster": settings.TASKS_CLUSTER,
            },
        )
    # Jobs of ours that an earlier version scheduled and this one does not.
    current = {func for func, _ in SCHEDULES.values()}
    for schedule in Schedule.objects.exclude(func__in=current):
        if schedule.func.startswith(OUR_PACKAGES):
            schedule.delete()
