"""django-q2's pages in the console, read-only for everyone, superusers included.

django-q2's own admin lets staff add a Schedule with any dotted path as its function (`os.system` with a shell
command as argument runs it in the task cluster), edit or resubmit queued and finished tasks, and delete the
periodic jobs. Our schedules are installed by `manage.py bootstrap` (batchserver.schedules) and our tasks are
queued by the code, so the console only shows them. Imported from batchserver.admin, after django-q2's admin
module has registered its own pages (django_q comes before batchserver in INSTALLED_APPS).
"""

from __future__ import annotations

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from batchserver.admin_kit import ReadOnlyAdmin


class ScheduleAdmin(ReadOnlyAdmin, q_admin.ScheduleAdmin):
    pass


class SuccessAdmin(ReadOnlyAdmin, q_admin.TaskAdmin):
    pass


class FailureAdmin(ReadOnlyAdmin, q_admin.FailAdmin):
    pass


class QueuedTaskAdmin(ReadOnlyAdmin, q_admin.QueueAdmin):
    pass


for model, model_admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueuedTaskAdmin),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
